"""Turn whatever a user holds (file paths, PIL images, numpy arrays, tensors) into network input.

The resize and normalisation a model was evaluated with travel inside its checkpoint
(`preprocess` entry); `Preprocess` rebuilds them from there, so a user never has to know
the input size or the mean/std. Every input kind goes through the same tensor resize, so
the same picture gives the same embedding whichever form it arrives in.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from igoas.errors import CheckpointError, IgoasError

if TYPE_CHECKING:
    import PIL.Image

ImageInput = Union[str, os.PathLike, "PIL.Image.Image", np.ndarray, torch.Tensor]

INTERPOLATIONS: dict[str, InterpolationMode] = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

# Float inputs a little outside [0, 1] come from resampling; far outside means the caller
# passed 0-255 floats or already-normalised tensors, which would silently give garbage.
_FLOAT_RANGE_SLACK = 1e-3


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to a 3 x H x W uint8 tensor, raising IgoasError that names the file.

    Decoding goes through the data pipeline's own reader, so `embed` on a file sees the
    very pixels evaluation sees.
    """
    from igoas.data import read_image

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
        from igoas.data import pil_to_rgb

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


@dataclass(frozen=True)
class Preprocess:
    """Resize to the network's input size, scale to [0, 1], subtract mean and divide by std."""

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise IgoasError(
                f"unknown interpolation {self.interpolation!r}; choose one of {sorted(INTERPOLATIONS)}"
            )

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any] | None, source: str = "checkpoint") -> "Preprocess":
        """Read a checkpoint's `preprocess` entry, naming the source when it is missing or malformed."""
        if not isinstance(entry, Mapping):
            raise CheckpointError(
                f"{source}: no 'preprocess' entry (input size, mean, std), so the model cannot be used for "
                "inference safely; re-save it with igoas, or build Preprocess(height, width, mean, std) yourself"
            )
        try:
            return cls(
                height=int(entry["height"]),
                width=int(entry["width"]),
                mean=tuple(float(v) for v in entry["mean"]),
                std=tuple(float(v) for v in entry["std"]),
                interpolation=str(entry.get("interpolation", "bilinear")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(
                f"{source}: malformed 'preprocess' entry {dict(entry)!r} ({err!r}); it needs height, width, "
                "mean (3 values), std (3 values) and optionally interpolation"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """The plain-dict form stored in checkpoints and exported files."""
        entry = asdict(self)
        entry["mean"], entry["std"] = list(self.mean), list(self.std)
        return entry

    def resize(self, image: ImageInput) -> torch.Tensor:
        """One image resized to the input size, as a 3 x H x W float tensor in [0, 1] (not normalised)."""
        tensor = image_to_tensor(image)
        if tuple(tensor.shape[-2:]) != (self.height, self.width):
            # uint8 stays uint8 through the resize, as PIL does, so files and arrays agree exactly
            tensor = TF.resize(
                tensor, [self.height, self.width], interpolation=INTERPOLATIONS[self.interpolation], antialias=True
            )
        if tensor.dtype == torch.uint8:
            return tensor.to(torch.float32).div_(255.0)
        return tensor.to(torch.float32).clamp_(0.0, 1.0)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """Subtract the mean and divide by the std, per channel, of a B x 3 x H x W batch in [0, 1]."""
        mean = torch.tensor(self.mean, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
        return (batch - mean) / std

    def __call__(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        """Any accepted input (one image, a batch or a list) as a normalised B x 3 x H x W float32 batch."""
        items = split_images(images)
        if not items:
            return torch.empty(0, 3, self.height, self.width)
        return self.normalize(torch.stack([self.resize(item) for item in items]))


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
