"""The corruption benchmark's figures: the mAP drop per corruption and severity (one
heat-map panel per checkpoint, on one colour scale) and a sample sheet of one image
under every corruption."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from igoas.corruptions import CORRUPTIONS, corrupt
from igoas.imaging.images import ImageInput, image_to_tensor
from igoas.utils.errors import IgoasError
from igoas.viz._figure import DEFAULT_DPI, Grid, PathLike, new_figure, save_figure, show_image


def plot_corruption_heatmap(records: Sequence[Mapping[str, Any]], out_path: PathLike, setting: str = "query", *,
                            panel_size: tuple[int, int] = (300, 470), dpi: int = DEFAULT_DPI) -> Path:
    """Clean mAP minus corrupted mAP (points) for every corruption (rows) and severity
    (columns) of `setting`, one panel per checkpoint side by side, annotated with the values.

    `records` are the benchmark's result rows (`CorruptionBenchmarkResult.to_dict()["results"]`).
    """
    checkpoints = list(dict.fromkeys(r["checkpoint"] for r in records if r["setting"] == setting))
    if not checkpoints:
        raise IgoasError(f"no corruption-benchmark results for setting {setting!r} to plot")
    corruptions = list(dict.fromkeys(r["corruption"] for r in records if r["setting"] == setting))
    severities = sorted({int(r["severity"]) for r in records if r["setting"] == setting})
    drops = {name: _drops(records, name, setting, corruptions, severities) for name in checkpoints}
    top = max(1.0, max(float(np.nanmax(d)) for d in drops.values()))
    figure = new_figure(panel_size[0] * len(checkpoints) + 200, panel_size[1], dpi=dpi)
    figure.set_layout_engine("constrained")  # room for the corruption names and the colour bar
    axes_row = figure.subplots(1, len(checkpoints), squeeze=False)[0]
    image = None
    for column, (axes, name) in enumerate(zip(axes_row, checkpoints)):
        image = axes.imshow(drops[name], cmap="magma_r", vmin=min(0.0, float(np.nanmin(drops[name]))), vmax=top,
                            aspect="auto")
        for (row, col), value in np.ndenumerate(drops[name]):
            if np.isfinite(value):
                axes.text(col, row, f"{int(round(value))}", ha="center", va="center", fontsize=6,
                          color="white" if value > 0.6 * top else "black")
        axes.set_title(name, fontsize=9)
        axes.set_xticks(range(len(severities)), [str(s) for s in severities], fontsize=7)
        axes.set_xlabel("severity", fontsize=8)
        axes.set_yticks(range(len(corruptions)), corruptions if column == 0 else [], fontsize=7)
    colourbar = figure.colorbar(image, ax=list(axes_row), fraction=0.05, pad=0.02)
    colourbar.set_label("mAP drop (points)", fontsize=8)
    colourbar.ax.tick_params(labelsize=7)
    return save_figure(figure, out_path)


def _drops(records: Sequence[Mapping[str, Any]], checkpoint: str, setting: str, corruptions: Sequence[str],
           severities: Sequence[int]) -> np.ndarray:
    clean = [float(r["mAP"]) for r in records if r["checkpoint"] == checkpoint and r["setting"] == "clean"]
    if not clean:
        raise IgoasError(f"no clean result for {checkpoint!r}: the mAP drop needs the clean reference")
    drops = np.full((len(corruptions), len(severities)), np.nan)
    for r in records:
        if r["checkpoint"] == checkpoint and r["setting"] == setting:
            drops[corruptions.index(r["corruption"]), severities.index(int(r["severity"]))] = clean[0] - float(r["mAP"])
    return drops


def plot_corruption_samples(image: ImageInput, out_path: PathLike, corruptions: Sequence[str] | None = None,
                            severity: int = 3, seed: int = 0, *, panel_size: tuple[int, int] = (64, 128),
                            columns: int = 7, dpi: int = DEFAULT_DPI) -> Path:
    """One image (path, or H x W x 3 uint8 array) clean and under every corruption at `severity`."""

    pixels = image_to_tensor(image)
    if pixels.dtype != np.uint8 and pixels.is_floating_point():
        pixels = (pixels * 255).round()
    pixels = pixels.permute(1, 2, 0).numpy().astype(np.uint8)
    names = list(corruptions or CORRUPTIONS)
    panels = [("clean", pixels)] + [(name, corrupt(pixels, name, severity, seed)) for name in names]
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    grid = Grid(rows, columns, panel_size[0], panel_size[1], title=24)
    figure = grid.figure(dpi)
    for number, (name, picture) in enumerate(panels):
        axes = grid.axes(figure, number // columns, number % columns)
        show_image(axes, picture.astype(np.float32) / 255.0, name.replace("_", "\n", 1), fontsize=6)
    return save_figure(figure, out_path)
