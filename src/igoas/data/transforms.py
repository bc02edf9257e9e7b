"""Image decoding and the training / test transforms (torchvision transforms v2).

The published recipe is resize to 384x128 plus a random horizontal flip; padding with a
random crop, colour jitter and random erasing exist for the comparison baselines.
Decoding uses torchvision.io for JPEG and PNG (measured faster than PIL here, see
benchmarks/dataloading.py) and PIL for the rest (Occluded-ReID's TIFF files).
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATION = "bilinear"  # recorded in checkpoints' `preprocess`
TORCHVISION_DECODED = (".jpg", ".jpeg", ".png")

if TYPE_CHECKING:
    from PIL import Image as PILImage


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
            image = v2.functional.to_dtype(image, torch.uint8, scale=True)
        return image
    from PIL import Image

    with Image.open(path) as image:
        return pil_to_rgb(image)


# PIL modes that hold more than 8 bits per sample as integers (16-bit PNG and TIFF).
_WIDE_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def pil_to_rgb(image: PILImage.Image) -> torch.Tensor:
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
    return v2.functional.pil_to_tensor(image.convert("RGB"))


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


def build_transforms(
    height: int,
    width: int,
    train: bool,
    *,
    flip: float = 0.5,
    pad: int = 0,
    color_jitter: float = 0.0,
    random_erasing: float = 0.0,
    corruption: float = 0.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Transforms from a decoded image (uint8 tensor or PIL) to a normalised float tensor.

    Training: flip with probability `flip`, resize, then optionally pad by `pad` pixels
    and crop back at random, colour jitter of strength `color_jitter` (brightness,
    contrast, saturation), and random erasing with probability `random_erasing` filled
    with the mean (0 after normalising). `corruption` is the probability of a random
    benchmark corruption at a random severity (`igoas.corruptions.augment`, the
    `corruptions` extra), applied before the resize as the benchmark corrupts images at
    their stored size. Test: resize and normalise only. The flip comes
    before the resize (they commute, and the source is usually the smaller image) and the
    geometry and colour work on uint8 before the float conversion: both are cheaper.
    """
    steps: list = [v2.ToImage()]
    if train and flip > 0:
        steps.append(v2.RandomHorizontalFlip(flip))
    if train and corruption > 0:
        from igoas.corruptions.augment import RandomCorruption

        steps.append(RandomCorruption(corruption))
    steps.append(v2.Resize((height, width), antialias=True))
    if train:
        if pad > 0:
            steps += [v2.Pad(pad), v2.RandomCrop((height, width))]
        if color_jitter > 0:
            steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    steps.append(NormalizeToFloat(mean, std))
    if train and random_erasing > 0:
        steps.append(v2.RandomErasing(p=random_erasing, value=0))
    return v2.Compose(steps)
