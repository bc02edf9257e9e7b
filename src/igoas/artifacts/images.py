"""Pixels in: image decoding, the one resize, and any user input as a 3 x H x W tensor.

The data pipeline (training and test transforms) and `Preprocess` (inference, export,
the stress test) both decode with `read_image` and resize with `resize_image`, so the
same picture gives the same network input whichever path it takes, and whichever form
(file, PIL image, numpy array, tensor) it arrives in.
"""
from __future__ import annotations

import functools
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

from igoas.artifacts.preprocess import INTERPOLATION
from igoas.errors import IgoasError

if TYPE_CHECKING:
    import PIL.Image

ImageInput = Union[str, os.PathLike, "PIL.Image.Image", np.ndarray, torch.Tensor]

INTERPOLATIONS: dict[str, InterpolationMode] = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

TORCHVISION_DECODED = (".jpg", ".jpeg", ".png")

# Float inputs a little outside [0, 1] come from resampling; far outside means the caller
# passed 0-255 floats or already-normalised tensors, which would silently give garbage.
_FLOAT_RANGE_SLACK = 1e-3


@functools.cache
def _torchvision_decoder() -> Callable[[str], torch.Tensor] | None:
    """torchvision.io's file reader + decoder, or None where this torchvision has none."""
    try:
        from torchvision.io import ImageReadMode, decode_image, read_file
    except ImportError:
        return None
    return lambda path: decode_image(read_file(path), mode=ImageReadMode.RGB)


def read_image(path: str, backend: str = "auto") -> torch.Tensor:
    """Decode an image file to an RGB uint8 tensor (3, H, W), whatever its mode.

    `backend` is "torchvision", "pil" or "auto": torchvision.io for JPEG and PNG (the
    faster here), PIL for other formats and wherever torchvision.io is unavailable (its
    decoders are deprecated since torchvision 0.29; the notice is silenced here because
    the PIL fallback already covers their removal). Both give the same 8-bit RGB pixels:
    16-bit images keep their high byte, multi-frame files (animated GIF, multi-page TIFF)
    their first frame.
    """
    decoder = _torchvision_decoder() if backend != "pil" else None
    if decoder is not None and (backend == "torchvision" or path.lower().endswith(TORCHVISION_DECODED)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            image = decoder(path)
        if image.ndim == 4:  # an animated file (e.g. a GIF under a .png name): its frames
            image = image[0]
        if image.dtype != torch.uint8:  # 16-bit PNG
            image = TF.to_dtype(image, torch.uint8, scale=True)
        return image
    from PIL import Image

    with Image.open(path) as image:
        return pil_to_rgb(image)


# PIL modes that hold more than 8 bits per sample as integers (16-bit PNG and TIFF).
_WIDE_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def pil_to_rgb(image: "PIL.Image.Image") -> torch.Tensor:
    """A PIL image as a 3 x H x W uint8 RGB tensor: the one conversion every path uses.

    `convert("RGB")` alone clips 16-bit grey values at 255 (an all-white image) and keeps
    whatever frame is current, so wide integer modes are scaled to 8 bits first and
    multi-frame files give their first frame. Palette, grey + alpha, RGBA and CMYK images
    go through PIL's own conversion (alpha is dropped).
    """
    import numpy as np
    from PIL import Image

    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    if image.mode in _WIDE_INTEGER_MODES:
        values = np.asarray(image).astype(np.int64)
        image = Image.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8), mode="L")
    return TF.pil_to_tensor(image.convert("RGB"))


def resize_image(image: torch.Tensor, height: int, width: int, interpolation: str = INTERPOLATION) -> torch.Tensor:
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
        return read_image(str(path))
    except (RuntimeError, OSError, ValueError, SyntaxError) as err:  # PIL raises SyntaxError for some bad headers
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        # torchvision prefixes its messages with the C++ function and source line
        reason = re.sub(r"^\w+, \S+\.cpp:\d+, ", "", reason)
        raise IgoasError(
            f"{path}: not a readable image ({reason}); pass a JPEG/PNG/BMP/TIFF file or remove this one"
        ) from None


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
