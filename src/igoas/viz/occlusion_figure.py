"""What each occlusion method does to one batch as training goes on (paper Fig. 4-6).

One row per method of `igoas.model.occlusion.OCCLUSION_METHODS`, one column per epoch; each
cell shows the whole batch side by side, so batch-based methods (one rectangle shared
by every image) are told apart from per-image ones at a glance, and IGO's rectangle can
be seen growing with the epoch. Feature-level methods act on the stage-4 map, so they
are run on a map of that size and shown through their mask: the dropped region,
upsampled to the input, is darkened.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from igoas.model.occlusion import OCCLUSION_METHODS, build_occlusion
from igoas.utils.errors import IgoasError
from igoas.viz._figure import (DEFAULT_DPI, IMAGENET_MEAN, IMAGENET_STD, Grid, PathLike, denormalize, save_figure,
                               show_image)

DEFAULT_EPOCHS = (0, 15, 30, 45, 60, 89)
# The IGOAS stage 4 keeps stride 1, so its map is the input downsampled 16 times.
FEATURE_STRIDE = 16
DROPPED_BRIGHTNESS = 0.2


def occlusion_examples(images: torch.Tensor, method: str, epochs: Sequence[float], *, seed: int = 0,
                       options: Mapping[str, Any] | None = None, feature_stride: int = FEATURE_STRIDE
                       ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(occluded batch, visible mask B x 1 x H x W) of `method` at each epoch.

    Every epoch uses a fresh method and a generator seeded with `seed`, so a figure is
    reproducible and, for IGO, only the schedule changes from one column to the next.
    Feature-level methods give back the input unchanged with their mask at input size.
    """

    examples = []
    for epoch in epochs:
        occlusion = build_occlusion(method, **dict(options or {}))
        generator = torch.Generator().manual_seed(seed)
        if occlusion.level == "feature":
            height, width = images.shape[-2:]
            stand_in = images.new_zeros(images.shape[0], 1, math.ceil(height / feature_stride),
                                        math.ceil(width / feature_stride))
            _, mask = occlusion(stand_in, float(epoch), generator)
            examples.append((images, F.interpolate(mask, size=(height, width), mode="nearest")))
        else:
            examples.append(occlusion(images, float(epoch), generator))
    return examples


def plot_occlusion_methods(images: torch.Tensor, out_path: PathLike, methods: Sequence[str] | None = None,
                           epochs: Sequence[float] = DEFAULT_EPOCHS, *, seed: int = 0,
                           method_options: Mapping[str, Mapping[str, Any]] | None = None,
                           mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                           image_height: int | None = None, dpi: int = DEFAULT_DPI) -> Path:
    """Draw every method (default: all but "none") on the normalised batch `images` at each epoch.

    Each panel is the batch laid side by side, `image_height` pixels tall (default: the
    input height, capped at 192) and as wide as the images' aspect requires; each title
    gives the epoch and the fraction of pixels hidden (of the feature map dropped, for
    feature-level methods).
    """

    methods = [name for name in OCCLUSION_METHODS if name != "none"] if methods is None else list(methods)
    unknown = [name for name in methods if name not in OCCLUSION_METHODS]
    if unknown:
        raise IgoasError(f"unknown occlusion method(s) {unknown}; choose from {sorted(OCCLUSION_METHODS)}")
    if images.dim() != 4 or images.shape[0] == 0 or not methods or not epochs:
        raise IgoasError("the occlusion figure needs a non-empty B x 3 x H x W batch, methods and epochs")
    batch, _, height, width = images.shape
    panel_height = image_height or min(height, 192)
    panel_width = round(batch * width * panel_height / height)
    grid = Grid(rows=len(methods), cols=len(epochs), panel_width=panel_width, panel_height=panel_height,
                label_width=130)
    figure = grid.figure(dpi)
    for row, method in enumerate(methods):
        options = dict((method_options or {}).get(method) or {})
        feature_level = build_occlusion(method, **options).level == "feature"
        grid.row_label(figure, row, method.replace("_", " ") + ("\n(feature map)" if feature_level else ""))
        examples = occlusion_examples(images, method, epochs, seed=seed, options=options)
        for col, (epoch, (occluded, mask)) in enumerate(zip(epochs, examples)):
            pixels = denormalize(occluded, mean, std)
            visible = mask.float().cpu().permute(0, 2, 3, 1).numpy()
            if feature_level:
                pixels = pixels * (visible + (1 - visible) * DROPPED_BRIGHTNESS)
            title = f"epoch {epoch:g}: {1 - visible.mean():.0%}"
            show_image(grid.axes(figure, row, col), np.concatenate(list(pixels), axis=1), title)
    return save_figure(figure, out_path)
