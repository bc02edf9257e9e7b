"""OSM, the occlusion suppression module of the suppression branch (SPEC section 3).

OSM is a CBAM on the stage-4 map whose output X' the mask loss pushes to zero inside
the occluded region; the loss itself lives in `igoas.model.losses`. The image-level visible
mask is resized to the map here too, since the resize mode is one of the places the
authors' code makes a choice (bilinear, align_corners=True).
"""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from igoas.model.cbam import CBAM


def _bilinear(mask: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(mask, size=size, mode="bilinear", align_corners=True)


def _nearest(mask: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(mask, size=size, mode="nearest")


def _area(mask: Tensor, size: tuple[int, int]) -> Tensor:
    return F.adaptive_avg_pool2d(mask, size)


# bilinear with align_corners=True is the authors' choice.
MASK_RESIZE: dict[str, Callable[[Tensor, tuple[int, int]], Tensor]] = {
    "bilinear": _bilinear,
    "nearest": _nearest,
    "area": _area,
}


def resize_mask(visible_mask: Tensor, feature_map: Tensor, mode: str = "bilinear") -> Tensor:
    """The visible mask (B x 1 x H x W) at the map's resolution, in fp32 even under autocast."""
    size = tuple(feature_map.shape[-2:])
    mask = visible_mask.float()
    return mask if tuple(mask.shape[-2:]) == size else MASK_RESIZE[mode](mask, size)


def mask_activity(visible_mask: Tensor) -> dict[str, float]:
    """How much of the stage-4 map a (resized) visible mask hides, for the training log.

    `mask_zeroed_cells`: fraction of map cells (over the batch) whose mask is 0, i.e. that
    the mask loss can drive to zero entirely; `mask_hidden`: 1 - the mask's mean. With the
    authors' bilinear, align_corners=True resize the map mask samples the image mask at
    the cell positions, so a rectangle between two cells hides nothing from the loss.
    """
    mask = visible_mask.detach().float()
    return {"mask_zeroed_cells": float((mask <= 1e-6).float().mean()), "mask_hidden": float(1 - mask.mean())}


class OSM(nn.Module):
    """Attention X' = CBAM(X) on the suppression branch's stage-4 map."""

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 3) -> None:
        super().__init__()
        self.cbam = CBAM(channels, reduction, spatial_kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.cbam(x)
