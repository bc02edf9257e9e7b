"""The crop resize of the torch-free runtime: PIL's antialiased resampling on uint8 pixels.

Training and `ReIDModel` resize with torchvision (`igoas.imaging.images.resize_image`:
antialiased, uint8 stays uint8), whose uint8 kernels follow Pillow's; PIL gives the same
pixels to within rounding here without importing torch.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from igoas.utils.errors import IgoasError

# Preprocess.interpolation names -> PIL's filters (PIL's filters widen when shrinking: antialiased).
PIL_FILTERS: dict[str, Image.Resampling] = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def resize_filter(interpolation: str) -> Image.Resampling:
    """PIL's filter for an export's recorded interpolation, or an IgoasError naming the known ones."""
    if interpolation not in PIL_FILTERS:
        raise IgoasError(f"interpolation {interpolation!r} in the model's metadata is not one of "
                         f"{sorted(PIL_FILTERS)}; re-export the model with `igoas export`")
    return PIL_FILTERS[interpolation]


def resize_batch(crops: Sequence[np.ndarray], height: int, width: int, resample: Image.Resampling) -> np.ndarray:
    """RGB H x W x 3 uint8 crops as one B x 3 x height x width float32 batch in [0, 1] (not normalised)."""
    batch = np.empty((len(crops), 3, height, width), dtype=np.float32)
    for row, crop in enumerate(crops):
        if crop.shape[:2] != (height, width):  # as resize_image: a crop already at size is kept as it is
            crop = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((width, height), resample))
        batch[row] = crop.transpose(2, 0, 1)
    return batch / np.float32(255.0)
