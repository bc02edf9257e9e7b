"""Figures of the ablation study: evaluation curves per method and the paper's Fig. 9
(stage-4 activation maps of every method on the same occluded queries)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from igoas.artifacts.checkpoint import model_from_checkpoint
from igoas.imaging.preprocess import Preprocess
from igoas.utils.errors import IgoasError
from igoas.viz._figure import DEFAULT_DPI, PathLike, new_figure, save_figure
from igoas.viz.activations import activation_maps, plot_activation_comparison

CURVE_PANELS = (("query", "occluded queries"), ("holistic", "holistic queries"))


def plot_study_curves(curves: Mapping[str, Mapping[str, Any]], out_path: PathLike, metric: str = "mAP", *,
                      size: tuple[int, int] = (1000, 420), dpi: int = DEFAULT_DPI) -> Path:
    """mAP over epochs, one line per method (mean over seeds, shaded ± one standard
    deviation), one panel per query set; `curves` as `igoas.studies.ablation.statistics.mean_curves`."""
    if not curves:
        raise IgoasError("plot_study_curves needs the curves of at least one method")
    figure = new_figure(*size, dpi=dpi)
    for axes, (key, title) in zip(figure.subplots(1, len(CURVE_PANELS)), CURVE_PANELS):
        for arm, curve in curves.items():
            epochs, values = curve["epochs"], curve.get(key, {})
            if not epochs or not values.get("mean"):
                continue
            mean, std = values["mean"], values["std"]
            line, = axes.plot(epochs, mean, marker="o", markersize=3, label=arm, linewidth=1.2)
            axes.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                              color=line.get_color(), alpha=0.15, linewidth=0)
        axes.set_title(title, fontsize=10)
        axes.set_xlabel("epoch", fontsize=9)
        axes.set_ylabel(f"{metric} (%)", fontsize=9)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    return save_figure(figure, out_path)


def plot_activation_figure(checkpoints: Mapping[str, Path], labels: Mapping[str, str], image_paths: Sequence[str],
                           out_path: PathLike) -> Path:
    """Paper Fig. 9 style: for each image, the global-branch activation map of every
    method, then the suppression-branch map (label + " S") of the methods that have one."""

    global_maps: dict[str, torch.Tensor] = {}
    suppression_maps: dict[str, torch.Tensor] = {}
    images = preprocess = None
    for arm, checkpoint in checkpoints.items():
        model, payload = model_from_checkpoint(checkpoint)
        preprocess = Preprocess.resolve(payload, str(checkpoint))
        images = preprocess(list(image_paths))
        maps = activation_maps(model, images)
        global_maps[labels[arm]] = maps["global"]
        if "suppression" in maps:
            suppression_maps[f"{labels[arm]} S"] = maps["suppression"]
    if images is None or preprocess is None:
        raise IgoasError("no trained method to draw activation maps of")
    panel = (2 * preprocess.width, 2 * preprocess.height)
    return plot_activation_comparison(images, {**global_maps, **suppression_maps}, out_path, mean=preprocess.mean,
                                      std=preprocess.std, panel_size=panel)
