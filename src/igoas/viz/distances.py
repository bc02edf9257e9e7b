"""Figures of the verification view: pair distance distributions and the ROC curve.

The numbers behind them (pair distances, ROC, TPR@FPR) live in
`igoas.evaluation.verification`, which also puts TPR@FPR in every evaluation table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from igoas.evaluation.distance import metric_label
from igoas.evaluation.verification import DEFAULT_FPRS, RocCurve
from igoas.utils.errors import IgoasError
from igoas.viz._figure import DEFAULT_DPI, PathLike, new_figure, save_figure


def plot_distance_distributions(positive: np.ndarray, negative: np.ndarray, out_path: PathLike, bins: int = 100, *,
                                metric: str = "euclidean", size: tuple[int, int] = (640, 480),
                                dpi: int = DEFAULT_DPI) -> Path:
    """Overlaid density histograms of positive and negative pair distances of `metric`, named on
    the x axis so the figure's numbers can be compared with other tools' on the same scale."""
    positive, negative = np.asarray(positive).ravel(), np.asarray(negative).ravel()
    if positive.size == 0 and negative.size == 0:
        raise IgoasError("no pair distances to plot")
    axis_label = metric_label(metric)
    figure = new_figure(*size, dpi=dpi)
    axes = figure.add_subplot()
    edges = np.histogram_bin_edges(np.concatenate([positive, negative]), bins=bins)
    for values, label, colour in ((positive, "same identity", "tab:green"), (negative, "different identity", "tab:red")):
        if values.size:
            axes.hist(values, bins=edges, density=True, alpha=0.5, color=colour,
                      label=f"{label} ({values.size:,} pairs, mean {values.mean():.3f})")
    axes.set_xlabel(axis_label)
    axes.set_ylabel("density")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return save_figure(figure, out_path)


def plot_roc(roc: RocCurve, out_path: PathLike, fprs: Sequence[float] = DEFAULT_FPRS, *,
             size: tuple[int, int] = (640, 480), dpi: int = DEFAULT_DPI) -> Path:
    """The ROC curve on a logarithmic FPR axis, with the TPR at each of `fprs` marked and listed."""
    figure = new_figure(*size, dpi=dpi)
    axes = figure.add_subplot()
    floor = min(min(fprs), 1e-5) / 10
    positive_fpr = roc.fpr > 0
    axes.plot(roc.fpr[positive_fpr], roc.tpr[positive_fpr], label=f"ROC (AUC {roc.auc():.4f})")
    for fpr, tpr in roc.tpr_at_fprs(fprs).items():
        axes.plot([fpr], [tpr], "o", label=f"TPR@FPR={fpr:g}: {100 * tpr:.2f}%")
    axes.set_xscale("log")
    axes.set_xlim(floor, 1.0)
    axes.set_ylim(0.0, 1.0)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return save_figure(figure, out_path)
