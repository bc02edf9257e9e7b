"""Verification view of a ReID model: same-identity (positive) and different-identity
(negative) query-gallery pair distances, and the ROC curve with the true positive rate at
chosen false positive rates (the TPR@FPR figures fast-reid reports beside R1 and mAP).

Pairs the ranking protocol ignores are ignored here too: junk gallery identity -1 and
same-identity pairs seen by the same camera.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from igoas.evaluation.arrays import ArrayLike, as_ids, as_tensor
from igoas.evaluation.distance import compute_distance
from igoas.utils.errors import IgoasError

DEFAULT_FPRS = (1e-4, 1e-3, 1e-2)
# Negative pairs kept (a seeded uniform sample when there are more): enough to resolve
# false positive rates near 1e-6, small enough to sort in a fraction of a second.
MAX_NEGATIVES = 2_000_000
JUNK_ID = -1


def pair_distances(distances: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray,
                   q_camids: np.ndarray | None = None, g_camids: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) pair distances of a whole query x gallery distance matrix
    (cameras optional: without them no same-camera pair is dropped)."""
    distances = np.asarray(distances)
    same_id = np.asarray(q_pids)[:, None] == np.asarray(g_pids)[None, :]
    valid = np.broadcast_to(np.asarray(g_pids)[None, :] != JUNK_ID, same_id.shape)
    if q_camids is not None and g_camids is not None:
        valid = valid & ~(same_id & (np.asarray(q_camids)[:, None] == np.asarray(g_camids)[None, :]))
    return distances[same_id & valid], distances[~same_id & valid]


class PairSampler:
    """Collects every positive pair distance and a seeded uniform sample of about
    `max_negatives` negative ones from blocks of query rows, so the full query x gallery
    matrix never has to exist (MSMT17's would be about 4 GB)."""

    def __init__(self, q_pids: ArrayLike, g_pids: ArrayLike, g_camids: ArrayLike,
                 max_negatives: int = MAX_NEGATIVES, seed: int = 0) -> None:
        q_pids_t = as_ids(q_pids, "q_pids", len(q_pids))
        self.g_pids = as_ids(g_pids, "g_pids", len(g_pids))
        self.g_camids = as_ids(g_camids, "g_camids", len(self.g_pids))
        known = self.g_pids[self.g_pids != JUNK_ID]
        identities, counts = torch.unique(known, return_counts=True)
        same = dict(zip(identities.tolist(), counts.tolist()))
        negatives = len(q_pids_t) * known.numel() - sum(same.get(int(p), 0) for p in q_pids_t.tolist())
        self.keep = min(1.0, max_negatives / max(negatives, 1))
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}
        self._positive: list[torch.Tensor] = []
        self._negative: list[torch.Tensor] = []

    def add(self, distances: ArrayLike, q_pids: ArrayLike, q_camids: ArrayLike) -> None:
        """Take the pairs of one block of query rows (smaller distance = more alike)."""
        distances = as_tensor(distances, "distances")
        device, rows = distances.device, distances.shape[0]
        q_pids_t = as_ids(q_pids, "q_pids", rows).to(device)[:, None]
        q_camids_t = as_ids(q_camids, "q_camids", rows).to(device)[:, None]
        g_pids, g_camids = self.g_pids.to(device)[None, :], self.g_camids.to(device)[None, :]
        same_id = q_pids_t == g_pids
        valid = (g_pids != JUNK_ID) & ~(same_id & (q_camids_t == g_camids))
        negative = valid & ~same_id
        if self.keep < 1.0:
            negative &= torch.rand(distances.shape, generator=self._generator(device), device=device) < self.keep
        self._positive.append(distances[same_id & valid].cpu())
        self._negative.append(distances[negative].cpu())

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(positive, negative) distances gathered so far, as numpy arrays."""
        def joined(parts: list[torch.Tensor]) -> np.ndarray:
            return torch.cat(parts).numpy() if parts else np.empty(0)

        return joined(self._positive), joined(self._negative)

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]


def sampled_pair_distances(qf: np.ndarray, gf: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray,
                           q_camids: np.ndarray, g_camids: np.ndarray, metric: str = "cosine",
                           max_negatives: int = MAX_NEGATIVES, seed: int = 0, rows_per_block: int = 256
                           ) -> tuple[np.ndarray, np.ndarray]:
    """`pair_distances` from features, `rows_per_block` queries at a time (see PairSampler)."""

    sampler = PairSampler(q_pids, g_pids, g_camids, max_negatives, seed)
    for start in range(0, len(q_pids), rows_per_block):
        block = slice(start, start + rows_per_block)
        sampler.add(compute_distance(np.asarray(qf[block]), np.asarray(gf), metric), np.asarray(q_pids)[block],
                    np.asarray(q_camids)[block])
    return sampler.pairs()


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


def tpr_at_fprs(sampler: PairSampler, fprs: Sequence[float] = DEFAULT_FPRS) -> dict[float, float]:
    """TPR at each false positive rate from the pairs a sampler gathered ({} without positives or negatives)."""
    positive, negative = sampler.pairs()
    if positive.size == 0 or negative.size == 0:
        return {}
    return roc_curve(positive, negative).tpr_at_fprs(fprs)
