"""Verification view of a ReID model: how far apart same-identity (positive) and
different-identity (negative) query-gallery pairs are, and the ROC curve with the true
positive rate at chosen false positive rates (the TPR@FPR figures fast-reid reports)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from igoas.errors import IgoasError
from igoas.viz._figure import DEFAULT_DPI, PathLike, new_figure, save_figure

DEFAULT_FPRS = (1e-4, 1e-3, 1e-2)


def pair_distances(distances: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray,
                   q_camids: np.ndarray | None = None, g_camids: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) pair distances of a query x gallery distance matrix.

    Pairs the ranking protocol ignores are ignored here too: junk gallery identity -1
    and, when cameras are given, same-identity pairs seen by the same camera.
    """
    distances = np.asarray(distances)
    same_id = np.asarray(q_pids)[:, None] == np.asarray(g_pids)[None, :]
    valid = np.broadcast_to(np.asarray(g_pids)[None, :] != -1, same_id.shape)
    if q_camids is not None and g_camids is not None:
        valid = valid & ~(same_id & (np.asarray(q_camids)[:, None] == np.asarray(g_camids)[None, :]))
    return distances[same_id & valid], distances[~same_id & valid]


def sampled_pair_distances(qf: np.ndarray, gf: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray,
                           q_camids: np.ndarray, g_camids: np.ndarray, metric: str = "cosine",
                           max_negatives: int = 2_000_000, seed: int = 0, rows_per_block: int = 256
                           ) -> tuple[np.ndarray, np.ndarray]:
    """`pair_distances` from features, a block of queries at a time, keeping every positive
    pair and a seeded uniform sample of about `max_negatives` negative ones.

    The full query x gallery matrix is never built (MSMT17's would be about 4 GB), and an
    ROC from two million negatives still resolves false positive rates near 1e-6.
    """
    from igoas.evaluation.distance import compute_distance

    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    gallery_ids, gallery_counts = np.unique(g_pids[g_pids != -1], return_counts=True)
    same_id = dict(zip(gallery_ids.tolist(), gallery_counts.tolist()))
    negatives = len(q_pids) * int(gallery_counts.sum()) - sum(same_id.get(int(p), 0) for p in q_pids)
    keep = min(1.0, max_negatives / max(negatives, 1))
    rng = np.random.default_rng(seed)
    positive, negative = [], []
    for start in range(0, len(q_pids), rows_per_block):
        block = slice(start, start + rows_per_block)
        distances = np.asarray(compute_distance(np.asarray(qf[block]), np.asarray(gf), metric))
        pos, neg = pair_distances(distances, q_pids[block], g_pids, q_camids[block], g_camids)
        positive.append(pos)
        negative.append(neg if keep == 1.0 else neg[rng.random(neg.size) < keep])
    return np.concatenate(positive), np.concatenate(negative)


@dataclass(frozen=True)
class RocCurve:
    """ROC of "same identity if distance <= threshold": `fpr[i]`, `tpr[i]` at `thresholds[i]`,
    from (0, 0) at threshold -inf to (1, 1)."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    def tpr_at(self, fpr: float) -> float:
        """The best true positive rate whose false positive rate does not exceed `fpr`."""
        return float(self.tpr[self.fpr <= fpr + 1e-15].max())

    def tpr_at_fprs(self, fprs: Sequence[float] = DEFAULT_FPRS) -> dict[float, float]:
        return {float(f): self.tpr_at(f) for f in fprs}

    def auc(self) -> float:
        """Area under the curve (trapezoids)."""
        return float(np.sum(np.diff(self.fpr) * (self.tpr[1:] + self.tpr[:-1]) / 2))


def roc_curve(positive: np.ndarray, negative: np.ndarray) -> RocCurve:
    """ROC of separating positive from negative pairs by a distance threshold.

    Tied distances form one operating point, so the curve never claims a threshold that
    splits equal distances.
    """
    positive, negative = np.asarray(positive, dtype=np.float64).ravel(), np.asarray(negative, dtype=np.float64).ravel()
    if positive.size == 0 or negative.size == 0:
        raise IgoasError(f"an ROC curve needs positive and negative pairs; got {positive.size} positive and "
                         f"{negative.size} negative (are there query identities in the gallery?)")
    values = np.concatenate([positive, negative])
    is_positive = np.concatenate([np.ones(positive.size, bool), np.zeros(negative.size, bool)])
    order = np.argsort(values, kind="stable")
    values, is_positive = values[order], is_positive[order]
    last_of_value = np.r_[values[1:] != values[:-1], True]
    true_positives = np.cumsum(is_positive)[last_of_value]
    false_positives = np.cumsum(~is_positive)[last_of_value]
    return RocCurve(fpr=np.r_[0.0, false_positives / negative.size], tpr=np.r_[0.0, true_positives / positive.size],
                    thresholds=np.r_[-np.inf, values[last_of_value]])


def plot_distance_distributions(positive: np.ndarray, negative: np.ndarray, out_path: PathLike, bins: int = 100, *,
                                size: tuple[int, int] = (640, 480), dpi: int = DEFAULT_DPI) -> Path:
    """Overlaid density histograms of positive and negative pair distances."""
    positive, negative = np.asarray(positive).ravel(), np.asarray(negative).ravel()
    if positive.size == 0 and negative.size == 0:
        raise IgoasError("no pair distances to plot")
    figure = new_figure(*size, dpi=dpi)
    axes = figure.add_subplot()
    edges = np.histogram_bin_edges(np.concatenate([positive, negative]), bins=bins)
    for values, label, colour in ((positive, "same identity", "tab:green"), (negative, "different identity", "tab:red")):
        if values.size:
            axes.hist(values, bins=edges, density=True, alpha=0.5, color=colour,
                      label=f"{label} ({values.size:,} pairs, mean {values.mean():.3f})")
    axes.set_xlabel("distance")
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
