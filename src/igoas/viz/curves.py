"""Line figures: CMC curves of several runs, and a run's training curves from its logs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from igoas.utils.errors import IgoasError
from igoas.utils.extras import optional
from igoas.viz._figure import DEFAULT_DPI, PathLike, new_figure, save_figure
from igoas.viz.run_logs import load_run_logs, series

# What a CMC curve holds -> the factor that turns it into percent.
CMC_UNITS = {"fraction": 100.0, "percent": 1.0}


def plot_cmc_curves(curves: Mapping[str, np.ndarray], out_path: PathLike, max_rank: int = 20, *,
                    unit: str = "fraction", size: tuple[int, int] = (640, 480), dpi: int = DEFAULT_DPI) -> Path:
    """Matching rate against rank, one line per run, ranks 1..`max_rank`, in percent.

    `unit` says what the curves hold, never guessed from their values (a weak model's
    percent curve can stay below 1): "fraction" (`RankResult.cmc`,
    `igoas.deploy.extraction.checkpoint_cmc`) or "percent" (the `cmc` lists of `igoas eval`'s
    JSON). Ranks are whole numbers on the x axis, the y axis spans 0-100 % so curves of
    different figures compare by eye, and the legend (each run's Rank-1) sits below the
    plot, where it cannot hide a curve.
    """
    MaxNLocator = optional("matplotlib.ticker", "drawing figures").MaxNLocator

    if not curves:
        raise IgoasError("plot_cmc_curves needs at least one curve")
    if unit not in CMC_UNITS:
        raise IgoasError(f"CMC unit {unit!r}: choose one of {', '.join(CMC_UNITS)}")
    figure = new_figure(*size, dpi=dpi)
    axes = figure.add_subplot()
    for label, curve in curves.items():
        values = np.asarray(curve, dtype=np.float64).ravel()[:max_rank] * CMC_UNITS[unit]
        if values.size == 0:
            raise IgoasError(f"CMC curve {label!r} is empty")
        axes.plot(np.arange(1, values.size + 1), values, marker="o", markersize=3, label=f"{label} (R1 {values[0]:.1f}%)")
    axes.set_xlabel("rank")
    axes.set_ylabel("matching rate (%)")
    axes.set_xlim(1, max_rank)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=min(2, len(curves)), frameon=False)
    figure.tight_layout()
    return save_figure(figure, out_path)


# Panel of the training-curves figure -> which flattened train-log keys it shows, judged
# by the key's words ("loss/id_global" -> loss, id, global) so "iteration" is no "ratio".
# The mask-loss terms get their own panel: beside the ID losses they would be invisible.
TRAINING_PANELS: dict[str, Callable[[set[str]], bool]] = {
    "total and identity losses": lambda words: any(word.startswith("loss") for word in words) and "mask" not in words,
    "mask losses (OSM)": lambda words: any(word.startswith("loss") for word in words) and "mask" in words,
    "learning rate": lambda words: bool(words & {"lr", "learning"}),
    "ID-loss weights": lambda words: bool(words & {"weight", "weights"}),
    "occlusion: IGO area, stage-4 mask": lambda words: bool(words & {"ratio", "area", "zeroed", "hidden"}),
}
EVALUATION_METRICS = ("R1", "mAP")


def plot_training_curves(run_dir: PathLike, out_path: PathLike, *, size: tuple[int, int] = (1200, 700),
                         dpi: int = DEFAULT_DPI) -> Path:
    """Six panels from a run's logs: identity losses, OSM mask losses, learning rate, ID
    weights, the occlusion (IGO area ratio, share of stage-4 map cells the mask zeroes,
    hidden share of the map) (all against iteration, from `train_log.jsonl`), and R1/mAP
    of every query set against epoch (from `metrics.jsonl`)."""
    logs = load_run_logs(run_dir)
    if not logs.train and not logs.metrics:
        raise IgoasError(f"{run_dir}: neither train_log.jsonl nor metrics.jsonl is there (or both are empty); "
                         "training curves need a run directory written by `igoas train`")
    figure = new_figure(*size, dpi=dpi)
    panels = figure.subplots(2, 3).ravel()
    steps = _training_steps(logs.train)
    columns = series(logs.train)
    for axes, (title, wanted) in zip(panels, TRAINING_PANELS.items()):
        keys = [key for key in columns if wanted(_words(key))]
        for index, key in enumerate(keys):
            axes.plot([steps[i] for i, _ in columns[key]], [v for _, v in columns[key]], label=legend_label(key),
                      **line_style(index))
        _finish(axes, title, "iteration", keys)
        if title == "learning rate" and keys and all(v > 0 for key in keys for _, v in columns[key]):
            axes.set_yscale("log")
    _plot_evaluation(panels[len(TRAINING_PANELS)], logs.metrics)
    figure.tight_layout()
    return save_figure(figure, out_path)


def _training_steps(records: list[dict[str, Any]]) -> list[float]:
    """The x value of each train-log record: its global `iteration` when logged and
    non-decreasing, else its position in the log."""
    iterations = [record.get("iteration") for record in records]
    if iterations and all(isinstance(i, (int, float)) for i in iterations) and np.all(np.diff(iterations) >= 0):
        return [float(i) for i in iterations]
    return [float(i) for i in range(len(records))]


def legend_label(key: str) -> str:
    """A log key as a legend reads it: "loss/id_global" -> "id global", "query/R1" -> "query R1"."""
    return key.removeprefix("loss/").replace("/", " ").replace("_", " ")


# Lines after the first are thinner and dashed or dotted, so a line that coincides with an
# earlier one (the zeroed and hidden mask shares often do) still shows over it.
LINE_STYLES = ("-", "--", ":", "-.")


def line_style(index: int) -> dict[str, Any]:
    """The style of a panel's `index`-th line."""
    return {"linestyle": LINE_STYLES[index % len(LINE_STYLES)], "linewidth": 2.0 if index == 0 else 1.2}


def _words(key: str) -> set[str]:
    return set(key.lower().replace("/", "_").split("_"))


def _plot_evaluation(axes: Any, records: list[dict[str, Any]]) -> None:
    columns = series(records)
    epochs = [float(record.get("epoch", index)) for index, record in enumerate(records)]
    keys = [key for key in columns if key.split("/")[-1] in EVALUATION_METRICS]
    for index, key in enumerate(keys):
        axes.plot([epochs[i] for i, _ in columns[key]], [v for _, v in columns[key]], marker="o", markersize=3,
                  label=legend_label(key), **line_style(index))
    _finish(axes, "evaluation (%)", "epoch", keys)
    _whole_epochs(axes, epochs)


def _whole_epochs(axes: Any, epochs: list[float]) -> None:
    """Epoch ticks at whole numbers only, with a margin of one epoch around a single
    evaluation (matplotlib would tick one point at 5.7 ... 6.3)."""
    MaxNLocator = optional("matplotlib.ticker", "drawing figures").MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if epochs and min(epochs) == max(epochs):
        axes.set_xlim(epochs[0] - 1, epochs[0] + 1)


def _finish(axes: Any, title: str, xlabel: str, keys: list[str]) -> None:
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(xlabel, fontsize=9)
    axes.grid(alpha=0.3)
    if keys:
        axes.legend(fontsize=7)
    else:
        axes.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axes.transAxes, color="grey")
