"""Image decoding and the training / test transforms (torchvision transforms v2).

The published recipe is resize to 384x128 plus a random horizontal flip; padding with a
random crop, colour jitter and random erasing exist for the comparison baselines.
Decoding uses torchvision.io for JPEG and PNG (measured faster than PIL here, see
benchmarks/dataloading.py) and PIL for the rest (Occluded-ReID's TIFF files).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATION = "bilinear"  # recorded in checkpoints' `preprocess`
TORCHVISION_DECODED = (".jpg", ".jpeg", ".png")


def read_image(path: str, backend: str = "auto") -> torch.Tensor:
    """Decode an image file to an RGB uint8 tensor (3, H, W), whatever its mode.

    `backend` is "torchvision", "pil" or "auto" (torchvision.io where it can decode the
    format, PIL otherwise).
    """
    use_torchvision = backend == "torchvision" or (backend == "auto" and path.lower().endswith(TORCHVISION_DECODED))
    if use_torchvision:
        from torchvision.io import ImageReadMode, decode_image, read_file

        return decode_image(read_file(path), mode=ImageReadMode.RGB)
    from PIL import Image

    with Image.open(path) as image:
        return v2.functional.pil_to_tensor(image.convert("RGB"))


def build_transforms(
    height: int,
    width: int,
    train: bool,
    *,
    flip: float = 0.5,
    pad: int = 0,
    color_jitter: float = 0.0,
    random_erasing: float = 0.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Transforms from a decoded image (uint8 tensor or PIL) to a normalised float tensor.

    Training: resize, flip with probability `flip`, then optionally pad by `pad` pixels and
    crop back at random, colour jitter of strength `color_jitter` (brightness, contrast,
    saturation), and random erasing with probability `random_erasing` filled with the
    mean (0 after normalisation). Test: resize and normalise only. Geometry and colour work
    on uint8 before the float conversion because that is several times cheaper.
    """
    steps: list[v2.Transform] = [v2.ToImage(), v2.Resize((height, width), antialias=True)]
    if train:
        if flip > 0:
            steps.append(v2.RandomHorizontalFlip(flip))
        if pad > 0:
            steps += [v2.Pad(pad), v2.RandomCrop((height, width))]
        if color_jitter > 0:
            steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if train and random_erasing > 0:
        steps.append(v2.RandomErasing(p=random_erasing, value=0))
    return v2.Compose(steps)
