"""Shared plumbing of the figures: exact pixel sizes, atomic PNG writes, image helpers.

Figures use matplotlib's object API (`matplotlib.figure.Figure`) instead of pyplot, so
drawing never switches a user's interactive backend nor leaves figures alive in pyplot's
global registry; PNGs are rendered by the Agg canvas. Sizes are given in pixels and come
out exact, so a caller (or a test) knows the size of every figure in advance.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from igoas.imaging.images import image_to_tensor, resize_image
from igoas.imaging.preprocess import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATION
from igoas.utils.errors import IgoasError
from igoas.utils.extras import optional
from igoas.utils.fileio import atomic_write

if TYPE_CHECKING:  # matplotlib is the viz extra: loaded where a figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DEFAULT_DPI = 100
# Output suffix -> matplotlib format; anything else is refused rather than written as PNG.
FIGURE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".pdf": "pdf", ".svg": "svg"}

PathLike = str | os.PathLike[str]


def new_figure(width_px: int, height_px: int, dpi: int = DEFAULT_DPI) -> "Figure":
    """A matplotlib Figure that renders to exactly `width_px` x `height_px` pixels."""
    Figure = optional("matplotlib.figure", "drawing figures").Figure

    if width_px < 1 or height_px < 1:
        raise IgoasError(f"a figure needs a positive size, got {width_px} x {height_px} pixels")
    return Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)


def figure_format(out_path: PathLike) -> str:
    """The image format `out_path`'s suffix asks for; an IgoasError for a suffix igoas does not write."""
    suffix = Path(out_path).suffix.lower()
    if suffix not in FIGURE_FORMATS:
        raise IgoasError(f"{out_path}: figures are written as {', '.join(FIGURE_FORMATS)}; "
                         f"name the output with one of these suffixes (got {suffix or 'none'!r})")
    return FIGURE_FORMATS[suffix]


def save_figure(figure: "Figure", out_path: PathLike) -> Path:
    """Render `figure` to `out_path` atomically in the format its suffix names (.png, .jpg,
    .pdf, .svg), so no half-written image is ever left."""

    fmt = figure_format(out_path)
    return atomic_write(out_path, lambda handle: figure.savefig(handle, format=fmt, dpi=figure.dpi))


@dataclass(frozen=True)
class Grid:
    """A table of equally sized image panels, each with a title line above it.

    Pixel layout: every column is `panel_width + gap` wide and every row
    `title + panel_height + gap` tall; an optional left strip of `label_width` pixels holds
    row labels. So a figure is `label_width + cols * (panel_width + gap)` wide and
    `rows * (title + panel_height + gap)` tall.
    """

    rows: int
    cols: int
    panel_width: int
    panel_height: int
    title: int = 16
    gap: int = 6
    label_width: int = 0

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole figure in pixels."""
        return (self.label_width + self.cols * (self.panel_width + self.gap),
                self.rows * (self.title + self.panel_height + self.gap))

    def figure(self, dpi: int = DEFAULT_DPI) -> Any:
        return new_figure(*self.size, dpi=dpi)

    def axes(self, figure: "Figure", row: int, col: int) -> "Axes":
        """Axes covering exactly the panel at (row, col), ticks and frame hidden."""
        width, height = self.size
        left = self.label_width + col * (self.panel_width + self.gap) + self.gap / 2
        top = row * (self.title + self.panel_height + self.gap) + self.title + self.gap / 2
        bottom = height - top - self.panel_height
        axes = figure.add_axes((left / width, bottom / height, self.panel_width / width, self.panel_height / height))
        axes.set_axis_off()
        return axes

    def row_label(self, figure: "Figure", row: int, text: str, fontsize: float = 9) -> None:
        """Write `text` centred in the label strip of `row`."""
        width, height = self.size
        centre = row * (self.title + self.panel_height + self.gap) + self.title + self.gap / 2 + self.panel_height / 2
        figure.text(self.label_width / 2 / width, 1 - centre / height, text, ha="center", va="center",
                    fontsize=fontsize, wrap=True)


def show_image(axes: "Axes", image: np.ndarray, title: str | None = None, fontsize: float = 8) -> None:
    """Draw an H x W x 3 image in [0, 1] stretched over the whole panel, with an optional title."""
    axes.imshow(np.clip(image, 0.0, 1.0), aspect="auto", interpolation="bilinear")
    if title:
        axes.set_title(title, fontsize=fontsize, pad=2)


def denormalize(images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """A normalised B x 3 x H x W batch back to displayable B x H x W x 3 pixels in [0, 1]."""
    images = images.detach().float().cpu()
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images * std_t + mean_t).clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()


def resize_map(values: torch.Tensor | np.ndarray, height: int, width: int) -> np.ndarray:
    """An h x w map bilinearly resized to height x width (float32 numpy)."""
    tensor = torch.as_tensor(values, dtype=torch.float32)[None, None]
    return F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()


def heat_overlay(image: np.ndarray, values: torch.Tensor | np.ndarray, alpha: float = 0.5,
                 colormap: str = "jet") -> np.ndarray:
    """Colour a map in [0, 1] with `colormap`, resize it to the image and blend it over the image."""
    colormaps = optional("matplotlib", "drawing figures").colormaps

    heat = colormaps[colormap](np.clip(resize_map(values, *image.shape[:2]), 0.0, 1.0))[..., :3]
    return (1.0 - alpha) * image + alpha * heat


def framed(image: np.ndarray, colour: Sequence[float], thickness: int) -> np.ndarray:
    """The image with its outer `thickness` pixels painted `colour` (RGB in [0, 1])."""
    out = np.array(image, dtype=np.float32, copy=True)
    if thickness > 0:
        rgb = np.asarray(colour, dtype=np.float32)
        out[:thickness], out[-thickness:] = rgb, rgb
        out[:, :thickness], out[:, -thickness:] = rgb, rgb
    return out


def read_image(path: PathLike, width: int, height: int) -> np.ndarray:
    """An image file resized to width x height, as H x W x 3 floats in [0, 1]."""

    tensor = resize_image(image_to_tensor(path), height, width, INTERPOLATION)
    scale = 255.0 if tensor.dtype == torch.uint8 else 1.0
    return tensor.permute(1, 2, 0).float().numpy() / scale
