"""Stage-4 activation maps of each branch (paper Fig. 8) and of several models side by side (Fig. 9).

An activation map is the channel-wise sum of squares of a branch's stage-4 feature map,
sum_c x_c(i, j)^2 (Zagoruyko and Komodakis's attention map, the one the ReID literature
and the authors' visualisation tool draw), rescaled per image to [0, 1] by its minimum
and maximum so images and branches are comparable at a glance. Maps keep the feature-map
size (24 x 8 at 384 x 128 input); figures resize them bilinearly over the input.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import torch

from igoas.utils.errors import IgoasError
from igoas.viz._figure import (DEFAULT_DPI, IMAGENET_MEAN, IMAGENET_STD, Grid, PathLike, denormalize, heat_overlay,
                               save_figure, show_image)

# Small inputs are drawn enlarged (by a whole factor) so panel titles fit above them.
MIN_PANEL_WIDTH = 96


def activation_maps(model: torch.nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per branch (`global`, `suppression`, ...), B x h x w maps in [0, 1] of the feature-map size.

    `images` is a normalised B x 3 x H x W batch on the model's device. The model runs in
    eval mode (no occlusion, BatchNorm running statistics) and is put back in the mode it
    was in; the maps come back on the CPU as float32.
    """
    if not hasattr(model, "feature_maps"):
        raise IgoasError(f"{type(model).__name__} has no feature_maps(images) method; activation maps need an "
                         "igoas network (igoas.model.build_model or a checkpoint)")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            maps = model.feature_maps(images)
    finally:
        model.train(was_training)
    return {branch: normalize_per_image(feature_map.float().pow(2).sum(dim=1).cpu())
            for branch, feature_map in maps.items()}


def normalize_per_image(maps: torch.Tensor) -> torch.Tensor:
    """Rescale each B x h x w map to [0, 1] by its own min and max (a flat map becomes all 0)."""
    flat = maps.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    span = (high - low).clamp_min(torch.finfo(maps.dtype).tiny)
    return ((flat - low[:, None]) / span[:, None]).view_as(maps)


def plot_activation_maps(images: torch.Tensor, maps: Mapping[str, torch.Tensor], out_path: PathLike, *,
                         mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                         alpha: float = 0.5, panel_size: tuple[int, int] | None = None,
                         dpi: int = DEFAULT_DPI) -> Path:
    """Paper Fig. 8: one row per image: the input, then each branch's map over it.

    `images` is the normalised batch the maps were computed from (`mean`/`std` undo the
    normalisation for display), `maps` what `activation_maps` returned. Each panel is
    `panel_size` (width, height) pixels, by default the input size, enlarged by the
    smallest whole factor that makes it at least `MIN_PANEL_WIDTH` wide.
    """
    return _plot_rows(images, dict(maps), out_path, mean, std, alpha, panel_size, dpi)


def plot_activation_comparison(images: torch.Tensor, maps_per_model: Mapping[str, torch.Tensor], out_path: PathLike,
                               *, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                               alpha: float = 0.5, panel_size: tuple[int, int] | None = None,
                               dpi: int = DEFAULT_DPI) -> Path:
    """Paper Fig. 9: the same images' maps under several models, one column per model.

    `maps_per_model` maps a label (e.g. "baseline", "random erasing", "IGO") to that
    model's B x h x w maps of one branch, usually `activation_maps(model, images)["global"]`,
    the branch every model has.
    """
    return _plot_rows(images, dict(maps_per_model), out_path, mean, std, alpha, panel_size, dpi)


def _plot_rows(images: torch.Tensor, columns: dict[str, torch.Tensor], out_path: PathLike, mean: Sequence[float],
               std: Sequence[float], alpha: float, panel_size: tuple[int, int] | None, dpi: int) -> Path:
    if images.dim() != 4 or images.shape[0] == 0:
        raise IgoasError(f"expected a non-empty B x 3 x H x W image batch, got shape {tuple(images.shape)}")
    if not columns:
        raise IgoasError("no activation maps to draw")
    for label, values in columns.items():
        if values.dim() != 3 or values.shape[0] != images.shape[0]:
            raise IgoasError(f"maps {label!r} have shape {tuple(values.shape)}; expected {images.shape[0]} x h x w, "
                             "one map per image")
    pixels = denormalize(images, mean, std)
    scale = max(1, math.ceil(MIN_PANEL_WIDTH / images.shape[-1]))
    width, height = panel_size or (images.shape[-1] * scale, images.shape[-2] * scale)
    grid = Grid(rows=images.shape[0], cols=1 + len(columns), panel_width=width, panel_height=height)
    figure = grid.figure(dpi)
    for row, image in enumerate(pixels):
        show_image(grid.axes(figure, row, 0), image, "input")
        for col, (label, values) in enumerate(columns.items(), start=1):
            show_image(grid.axes(figure, row, col), heat_overlay(image, values[row], alpha), label)
    return save_figure(figure, out_path)
