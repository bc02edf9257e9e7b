"""Pixels in: image decoding, the one resize, and any user input as a 3 x H x W tensor.

The data pipeline (training and test transforms) and `Preprocess` (inference, export,
the stress test) both decode with `read_image` and resize with `resize_image`, so the
same picture gives the same network input whichever path it takes, and whichever form
(file, PIL image, numpy array, tensor) it arrives in.
"""
from __future__ import annotations

import functools
import io
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from igoas.utils.errors import IgoasError

if TYPE_CHECKING:
    import PIL.Image

ImageInput = Union[str, os.PathLike, "PIL.Image.Image", np.ndarray, torch.Tensor]

INTERPOLATIONS: dict[str, InterpolationMode] = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

# The formats every path reads (training, evaluation, extraction, serving), and their file
# name endings: a folder given to `extract` or a dataset loader lists exactly these.
IMAGE_FORMATS: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg"),
    "PNG": (".png",),
    "BMP": (".bmp",),
    "TIFF": (".tif", ".tiff"),
    "WEBP": (".webp",),
    "GIF": (".gif",),
}
IMAGE_EXTENSIONS = tuple(suffix for suffixes in IMAGE_FORMATS.values() for suffix in suffixes)
FORMAT_NAMES = "/".join(IMAGE_FORMATS)

# Width x height above which a file is refused before its pixels are decoded: a 100 kB PNG
# can declare 30000 x 30000 pixels (a decompression bomb) and take gigabytes to decode.
MAX_PIXELS_VARIABLE = "IGOAS_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 64_000_000

BACKENDS = ("auto", "pil")

# Float inputs a little outside [0, 1] come from resampling; far outside means the caller
# passed 0-255 floats or already-normalised tensors, which would silently give garbage.
_FLOAT_RANGE_SLACK = 1e-3


class ImageDecodeError(ValueError):
    """Why some bytes are not a usable image; callers add the file's name and the fix.

    `too_large` marks a pixel count over the limit, which a server answers differently
    (413) from damaged data.
    """

    def __init__(self, reason: str, too_large: bool = False) -> None:
        super().__init__(reason)
        self.too_large = too_large


def max_image_pixels() -> int:
    """The pixel limit: IGOAS_MAX_IMAGE_PIXELS where set, else 64 million (an 8000 x 8000 photo)."""
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise IgoasError(f"{MAX_PIXELS_VARIABLE}={text!r} is not a pixel count; give a whole number of at least 1 "
                         f"(the default is {DEFAULT_MAX_PIXELS:_}) or unset it")
    return value


@functools.cache
def _jpeg_decoder() -> Callable[[bytes], torch.Tensor] | None:
    """torchvision.io's JPEG decoder (EXIF orientation applied), or None where this torchvision has none.

    Twice as fast as PIL for a person crop here. It is used for JPEG only: its PNG decoder
    takes the process down (SIGSEGV) on some damaged files, where PIL raises an error.
    """
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None

    def decode(data: bytes) -> torch.Tensor:
        with warnings.catch_warnings():  # deprecated since torchvision 0.29; PIL covers its removal
            warnings.simplefilter("ignore", DeprecationWarning)
            encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, apply_exif_orientation=True)

    return decode


def decode_image_data(data: bytes, backend: str = "auto", max_pixels: int | None = None) -> torch.Tensor:
    """Encoded image bytes -> an RGB uint8 tensor (3, H, W): the one decoder of every path.

    The header is read first (by PIL) and the format and pixel count checked before any
    pixel is decoded, so a decompression bomb, a damaged file or a file that is no image
    raises `ImageDecodeError` and never takes the process down. JPEG is decoded by
    torchvision.io with `backend="auto"`, everything else (and JPEG with `"pil"`) by PIL;
    both give the same pixels, upright as the EXIF orientation says.
    """
    from PIL import Image, UnidentifiedImageError

    if backend not in BACKENDS:
        raise IgoasError(f"image backend {backend!r} is not one of {', '.join(BACKENDS)}")
    limit = max_image_pixels() if max_pixels is None else max_pixels
    if not data:
        raise ImageDecodeError("the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(io.BytesIO(data), formats=tuple(IMAGE_FORMATS)) as image:
                width, height = image.size
                if width * height > limit:
                    raise ImageDecodeError(_too_large(f"{width} x {height} pixels", limit), too_large=True)
                decoder = _jpeg_decoder() if backend == "auto" and image.format == "JPEG" else None
                if decoder is None:
                    image.load()
                    return pil_to_rgb(image)
        return decoder(data)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as err:  # PIL's own guard (twice its MAX_IMAGE_PIXELS) stops it at open
        declared = re.search(r"\((\d+) pixels\)", str(err))
        guard = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else limit
        raise ImageDecodeError(_too_large(f"{int(declared[1]):_} pixels" if declared else "more pixels than PIL opens",
                                          min(limit, guard)), too_large=True) from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"not an image file: its first bytes match none of {FORMAT_NAMES}") from None
    except (RuntimeError, OSError, ValueError, SyntaxError, EOFError) as err:  # damaged data inside a known format
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        # torchvision prefixes its messages with the C++ function and source line
        raise ImageDecodeError("damaged image data (" + re.sub(r"^\w+, \S+\.cpp:\d+, ", "", reason) + ")") from None


def _too_large(declared: str, limit: int) -> str:
    return (f"it declares {declared}, more than the {limit:_} allowed (a decompression bomb, or a photo far "
            f"larger than a person crop); shrink it, or raise {MAX_PIXELS_VARIABLE} if it is meant")


def read_image(path: str | os.PathLike, backend: str = "auto") -> torch.Tensor:
    """Decode an image file to an RGB uint8 tensor (3, H, W), whatever its format and mode.

    Raises OSError where the file cannot be read and `ImageDecodeError` where its bytes are
    no usable image; `load_image` turns both into one line naming the file.
    """
    return decode_image_data(Path(path).read_bytes(), backend)


# PIL modes that hold more than 8 bits per sample as integers (16- and 32-bit PNG and TIFF).
_WIDE_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_TIFF_BITS_PER_SAMPLE, _TIFF_SAMPLE_FORMAT = 258, 339  # a signed sample format is 2


def pil_to_rgb(image: "PIL.Image.Image") -> torch.Tensor:
    """A PIL image as a 3 x H x W uint8 RGB tensor: the one conversion every path uses.

    The image is turned upright as its EXIF orientation says (phone photos), multi-frame
    files (animated GIF, multi-page TIFF) give their first frame, and wide samples are
    scaled to 8 bits (`convert("RGB")` alone clips 16-bit values to white and turns float
    images black). Palette, grey + alpha, RGBA and CMYK images go through PIL's own
    conversion (alpha is dropped).
    """
    from PIL import ExifTags, Image, ImageOps

    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in _WIDE_INTEGER_MODES or image.mode == "F":
        image = Image.fromarray(_wide_to_8_bits(image))  # 8-bit grey ("L")
    return TF.pil_to_tensor(image.convert("RGB"))


def _wide_to_8_bits(image: "PIL.Image.Image") -> np.ndarray:
    """Wide grey samples as 8-bit values, scaled by the range the file declares.

    Integers: 16 bits unless a TIFF declares another depth (a signed 32-bit TIFF spans 0 to
    2**31 - 1 in the picture's range). Floats: 0 to 1, the convention of float images, or
    0 to 255 where values exceed 1 (values outside are clipped; NaN is black).
    """
    values = np.asarray(image)
    if image.mode == "F":
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        scaled = values if values.max(initial=0.0) > 1.0 else values * 255.0
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    tags = getattr(image, "tag_v2", {})
    bits = int(tags.get(_TIFF_BITS_PER_SAMPLE, (16,))[0]) - (1 if tags.get(_TIFF_SAMPLE_FORMAT, (1,))[0] == 2 else 0)
    return (np.clip(values.astype(np.int64), 0, (1 << bits) - 1) >> max(bits - 8, 0)).astype(np.uint8)


def resize_image(image: torch.Tensor, height: int, width: int, interpolation: str) -> torch.Tensor:
    """The one resize: antialiased, uint8 stays uint8 (as PIL does); an image already at size is returned as is.

    Keeps the tensor's type (a `tv_tensors.Image` stays one), so it is also a step of the
    transforms v2 pipelines.
    """
    if tuple(image.shape[-2:]) == (height, width):
        return image
    return TF.resize(image, [height, width], interpolation=INTERPOLATIONS[interpolation], antialias=True)


def to_unit_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 0-255 or float pixels as float32 in [0, 1]."""
    if image.dtype == torch.uint8:
        return image.to(torch.float32).div_(255.0)
    return image.to(torch.float32).clamp_(0.0, 1.0)


class NormalizeToFloat:
    """uint8 image -> float32 (x / 255 - mean) / std in one fused multiply-add.

    Equal to v2.ToDtype(scale=True) followed by v2.Normalize, but about three times
    cheaper: the float conversion and normalisation dominate the cost of a 384x128 sample.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.bias = -torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) / std_t

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, image.as_subclass(torch.Tensor).to(torch.float32), self.scale)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale.flatten().tolist()}, bias={self.bias.flatten().tolist()})"


@functools.lru_cache(maxsize=8)
def normalizer(mean: tuple[float, ...], std: tuple[float, ...]) -> NormalizeToFloat:
    """The uint8 normalisation of one mean/std pair, built once."""
    return NormalizeToFloat(mean, std)


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to a 3 x H x W uint8 tensor, raising IgoasError that names the file.

    Decoding goes through the data pipeline's own reader, so `embed` on a file sees the
    very pixels evaluation sees.
    """
    path = Path(path)
    if not path.is_file():
        raise IgoasError(f"{path}: no such image file; check the path")
    try:
        return read_image(path)
    except OSError as err:
        raise IgoasError(f"{path}: cannot be read ({err.strerror or err}); check its permissions") from None
    except ImageDecodeError as err:
        fix = "" if err.too_large else f"; pass a {FORMAT_NAMES} file or remove this one"
        raise IgoasError(f"{path}: not a readable image: {err}{fix}") from None


def image_to_tensor(image: ImageInput) -> torch.Tensor:
    """One image of any accepted kind as a 3 x H x W tensor (uint8, or float in [0, 1])."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    if isinstance(image, np.ndarray):
        return _chw_from_tensor(_hwc_array_to_chw(image), "numpy array")
    if isinstance(image, torch.Tensor):
        return _chw_from_tensor(image.detach().cpu(), "tensor")
    raise IgoasError(
        f"cannot use an object of type {type(image).__name__} as an image; pass a file path, a PIL image, "
        "an H x W x 3 uint8 numpy array or a 3 x H x W tensor"
    )


def split_images(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """Flatten one image, a batch (B x C x H x W tensor, B x H x W x C array) or a list of them into single images."""
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return list(images.unbind(0))
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    if isinstance(images, (list, tuple)):
        items: list[ImageInput] = []
        for item in images:
            items.extend(split_images(item) if _is_batch(item) else [item])
        return items
    return [images]


def _is_batch(item: Any) -> bool:
    return (isinstance(item, torch.Tensor) and item.dim() == 4) or (isinstance(item, np.ndarray) and item.ndim == 4)


def _hwc_array_to_chw(array: np.ndarray) -> torch.Tensor:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise IgoasError(f"a numpy image must be H x W x 3 (or H x W, H x W x 4); got shape {array.shape}")
    # a copy when read-only (e.g. np.asarray of a PIL image): torch tensors must be writable
    array = np.ascontiguousarray(array) if array.flags.writeable else np.array(array, order="C")
    return torch.from_numpy(array).permute(2, 0, 1)


def _chw_from_tensor(tensor: torch.Tensor, kind: str) -> torch.Tensor:
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 3 or tensor.shape[0] not in (1, 3, 4):
        raise IgoasError(
            f"an image {kind} must be 3 x H x W for tensors, H x W x 3 for arrays; got shape {tuple(tensor.shape)}"
        )
    tensor = tensor[:3] if tensor.shape[0] == 4 else tensor.expand(3, -1, -1) if tensor.shape[0] == 1 else tensor
    if tensor.dtype == torch.uint8:
        return tensor.contiguous()
    if not tensor.is_floating_point():
        raise IgoasError(f"an image {kind} must be uint8 (0-255) or float (0-1); got dtype {tensor.dtype}")
    low, high = float(tensor.min()), float(tensor.max())
    if low < -_FLOAT_RANGE_SLACK or high > 1.0 + _FLOAT_RANGE_SLACK:
        raise IgoasError(
            f"a float image {kind} must hold values in [0, 1]; got [{low:.3g}, {high:.3g}]. Divide 0-255 values "
            "by 255 and pass images before mean/std normalisation (the model applies its own)"
        )
    return tensor.contiguous()
