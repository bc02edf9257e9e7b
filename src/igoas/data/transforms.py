"""The training / test transforms (torchvision transforms v2).

The published recipe is resize to 384x128 plus a random horizontal flip; padding with a
random crop, colour jitter and random erasing exist for the comparison baselines.
Decoding (`read_image`: torchvision.io for JPEG, measured faster than PIL here, see
benchmarks/dataloading.py; PIL for the rest) and the resize are those of
`igoas.imaging.images`, shared with inference.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from igoas.corruptions.augment import RandomCorruption
from igoas.imaging.images import NormalizeToFloat, resize_image
from igoas.imaging.preprocess import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATION

# Random erasing's area fraction and aspect h/w ranges (Zhong et al., torchreid).
ERASING_AREA = (0.02, 0.4)
ERASING_ASPECT = (0.3, 1 / 0.3)


class Resize:
    """The transforms' resize step: `igoas.imaging.images.resize_image`, the resize inference uses too."""

    def __init__(self, height: int, width: int, interpolation: str = INTERPOLATION) -> None:
        self.size, self.interpolation = (height, width), interpolation

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return resize_image(image, *self.size, self.interpolation)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, interpolation={self.interpolation})"


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
        steps.append(RandomCorruption(corruption))
    steps.append(Resize(height, width))
    if train:
        if pad > 0:
            steps += [v2.Pad(pad), v2.RandomCrop((height, width))]
        if color_jitter > 0:
            steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    steps.append(NormalizeToFloat(mean, std))
    if train and random_erasing > 0:
        # Zhong et al.'s sizes (area 2-40 %, aspect 0.3-3.3, as torchreid's), not torchvision's
        # 2-33 %; the fill 0 is the mean colour once normalised.
        steps.append(v2.RandomErasing(p=random_erasing, scale=ERASING_AREA, ratio=ERASING_ASPECT, value=0))
    return v2.Compose(steps)
