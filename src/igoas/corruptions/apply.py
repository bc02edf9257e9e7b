"""The 20 corruptions of the corruption-invariant ReID benchmark, applied to one image,
reproducibly.

The first 19 are those of the `imagecorruptions` package (ImageNet-C's 15, then speckle
noise, Gaussian blur, spatter and saturate), called unchanged except glass_blur, whose
per-pixel Python loop runs as one array pass with the same result bit for bit
(`igoas.corruptions.glass`); the twentieth is the benchmark's rain (`igoas.corruptions.rain`). Each takes an H x W x 3 uint8 image at its
stored size (the benchmark corrupts before resizing) and a severity 1-5.

The corruptions draw from NumPy's global random state. `corrupt` seeds it from the
given seed for the one call and restores it afterwards, so an image's corruption
depends only on (seed, image, corruption, severity), in any process and in any order.
"""
from __future__ import annotations

import zlib
from typing import Callable, Sequence

import numpy as np

from igoas.corruptions.glass import glass_blur
from igoas.corruptions.library import imagecorruptions
from igoas.corruptions.rain import rain
from igoas.utils.errors import ConfigError, IgoasError
from igoas.utils.seeding import seed_for

CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    "speckle_noise", "gaussian_blur", "spatter", "saturate", "rain",
)
SEVERITIES = (1, 2, 3, 4, 5)
MIN_SIDE = 32  # imagecorruptions refuses smaller images


def corruption_function(name: str) -> Callable[[np.ndarray, int], np.ndarray]:
    """`function(H x W x 3 uint8 image, severity) -> corrupted image` by benchmark name."""
    check_corruptions([name])
    if name == "rain":
        return rain
    if name == "glass_blur":
        return glass_blur

    library = imagecorruptions()
    return lambda image, severity: library.corrupt(image, severity=severity, corruption_name=name)


def check_corruptions(names: Sequence[str], severities: Sequence[int] = SEVERITIES) -> None:
    """ConfigError naming the first unknown corruption or severity."""
    if not names or not severities:
        raise ConfigError("the corruption benchmark needs at least one corruption and one severity")
    for name in names:
        if name not in CORRUPTIONS:
            raise ConfigError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    for severity in severities:
        if severity not in SEVERITIES:
            raise ConfigError(f"corruption severity must be one of 1-5, got {severity!r}")


def image_seed(seed: int, split: str, index: int, corruption: str, severity: int) -> int:
    """The seed of one image's corruption: independent of checkpoint, order and of the other settings run."""

    return seed_for(seed, zlib.crc32(split.encode()), index, zlib.crc32(corruption.encode()), severity)


def random_corruption(seed: int, split: str, index: int, corruptions: Sequence[str] = CORRUPTIONS,
                      severities: Sequence[int] = SEVERITIES) -> tuple[str, int]:
    """The benchmark's random setting: one corruption of `corruptions` and one severity of
    `severities` per image, uniformly. With the default 1-5, `severities[rng.integers(5)]`
    is the draw `rng.integers(1, 6)` made before severities could be chosen, so the
    benchmark's images are unchanged."""
    rng = np.random.default_rng(image_seed(seed, split, index, "random", 0))
    return corruptions[int(rng.integers(len(corruptions)))], int(severities[int(rng.integers(len(severities)))])


def corrupt(image: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """`image` (H x W x 3 uint8, both sides at least 32) under `corruption` at `severity`, seeded by `seed`.

    Rain returns a taller image for inputs of 60 rows or fewer, as in the benchmark; the
    caller resizes to the network's input anyway.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise IgoasError(f"corrupt() takes an H x W x 3 uint8 image, got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise IgoasError(f"image of {image.shape[0]} x {image.shape[1]} pixels is too small to corrupt: the "
                         f"corruptions need at least {MIN_SIDE} x {MIN_SIDE}")
    check_corruptions([corruption], [severity])
    function = corruption_function(corruption)
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        corrupted = function(image, severity)
    finally:
        np.random.set_state(state)
    return np.ascontiguousarray(np.clip(corrupted, 0, 255).astype(np.uint8))
