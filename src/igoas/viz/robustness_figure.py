"""The occlusion stress test's figure: metrics against occluded query area, one curve per checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from igoas.utils.errors import IgoasError
from igoas.viz._figure import DEFAULT_DPI, PathLike, new_figure, save_figure

MEAN_COLUMN = "mean over positions"


def plot_robustness(records: Sequence[Mapping[str, Any]], out_path: PathLike, metrics: Sequence[str] = ("R1", "mAP"),
                    *, panel_size: tuple[int, int] = (320, 260), dpi: int = DEFAULT_DPI) -> Path:
    """One row per metric, one column per occlusion position (plus their mean when there
    are several), each panel the metric (%) against occluded area (%) for every checkpoint.

    `records` are the stress test's result rows (dicts with checkpoint, position, area
    and the metrics, as in `StressTestResult.to_dict()["results"]`). The figure is
    `columns * panel_width` by `rows * panel_height` pixels.
    """
    if not records:
        raise IgoasError("no stress-test results to plot")
    checkpoints = list(dict.fromkeys(record["checkpoint"] for record in records))
    positions = list(dict.fromkeys(record["position"] for record in records))
    columns = ([MEAN_COLUMN] if len(positions) > 1 else []) + positions
    figure = new_figure(panel_size[0] * len(columns), panel_size[1] * len(metrics), dpi=dpi)
    axes_grid = figure.subplots(len(metrics), len(columns), squeeze=False)
    for row, metric in enumerate(metrics):
        for col, column in enumerate(columns):
            axes = axes_grid[row, col]
            for checkpoint in checkpoints:
                areas, values = _curve(records, checkpoint, positions if column == MEAN_COLUMN else [column], metric)
                axes.plot(areas, values, marker="o", markersize=3, label=checkpoint)
            axes.set_title(f"{metric}: {column}", fontsize=9)
            axes.set_xlabel("occluded area (%)", fontsize=8)
            axes.set_ylabel(f"{metric} (%)", fontsize=8)
            axes.tick_params(labelsize=7)
            axes.grid(alpha=0.3)
    axes_grid[0, 0].legend(fontsize=7)
    figure.tight_layout()
    return save_figure(figure, out_path)


def _curve(records: Sequence[Mapping[str, Any]], checkpoint: str, positions: Sequence[str],
           metric: str) -> tuple[list[float], list[float]]:
    """(areas, metric averaged over `positions`) of one checkpoint, sorted by area."""
    by_area: dict[float, list[float]] = {}
    for record in records:
        if record["checkpoint"] == checkpoint and record["position"] in positions:
            by_area.setdefault(float(record["area"]), []).append(float(record[metric]))
    areas = sorted(by_area)
    return areas, [float(np.mean(by_area[area])) for area in areas]
