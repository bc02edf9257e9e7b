"""CMC, mAP and mINP from the top-k lists of an index search, for galleries whose distance
matrix does not fit anywhere.

A query's metrics only depend on the ranks of its true matches, so the k nearest gallery
entries of every query (a FAISS or exhaustive search: Q x k indices and distances) carry
all of it, except for the true matches that fell outside the list. Those are only counted:
the number of true matches a query has in the whole gallery comes from counts per identity
and per (identity, camera), one sort of the gallery's ids, never from a query x gallery
pass. Memory is O(queries x k + gallery), with queries processed in blocks.

The protocol is `rank.py`'s: same identity seen by the same camera is dropped, identity -1
is junk, queries without a true match are skipped, equal distances rank by gallery index.
A true match outside a query's list is counted at rank infinity (precision 0), so mAP, mINP
and CMC are lower bounds; `mAP_upper`/`mINP_upper` place the missing matches right after
the list instead. All of them equal `evaluate_rank` when `exact` is True.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from igoas.evaluation.arrays import ArrayLike, all_finite, as_ids, as_tensor, rows_per_block
from igoas.evaluation.rank import JUNK_ID, RankAccumulator
from igoas.evaluation.result import RankResult
from igoas.utils.errors import IgoasError

MISSING = -1  # FAISS's index for "no entry here" (fewer than k results)


@dataclass(frozen=True)
class TopKResult(RankResult):
    """A `RankResult` from top-k lists, with what the lists could not see.

    `cmc`, `mAP` and `mINP` count true matches outside a query's list at rank infinity:
    lower bounds, equal to the exhaustive metrics when `exact`. `cmc[:cmc_exact_ranks]` is
    exact in any case. `mAP_upper`/`mINP_upper` are the bounds with every missing match
    placed right after the list. `incomplete_queries` are the (0-based) valid queries with
    a true match outside their list; `num_missing_matches` counts those matches.
    """

    exact: bool = True
    num_incomplete: int = 0
    incomplete_queries: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    num_missing_matches: int = 0
    cmc_exact_ranks: int = 0
    mAP_upper: float = 0.0
    mINP_upper: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """`RankResult.to_dict` plus the completeness fields (bounds in percent), JSON-ready."""
        summary = super().to_dict()
        summary.update(
            exact=bool(self.exact),
            num_incomplete=int(self.num_incomplete),
            num_missing_matches=int(self.num_missing_matches),
            cmc_exact_ranks=int(self.cmc_exact_ranks),
            mAP_upper=100.0 * float(self.mAP_upper),
            mINP_upper=100.0 * float(self.mINP_upper),
        )
        return summary


class MatchCounter:
    """Number of true matches (same identity, other camera, not junk) each query has in the gallery.

    Counts per identity minus counts per (identity, camera): O(gallery) memory, one sort,
    and a binary search per query, so a gallery of any size never meets the queries densely.
    """

    def __init__(self, g_pids: torch.Tensor, g_camids: torch.Tensor) -> None:
        self.pids, self.pid_counts = torch.unique(g_pids, return_counts=True)
        self.cam_low = int(g_camids.min()) if g_camids.numel() else 0
        self.cam_span = int(g_camids.max()) - self.cam_low + 1 if g_camids.numel() else 1
        self.pid_low = int(g_pids.min()) if g_pids.numel() else 0
        span = int(g_pids.max()) - self.pid_low + 1 if g_pids.numel() else 1
        if span * self.cam_span >= 2**62:
            raise IgoasError(f"identity ids span {span} values and camera ids {self.cam_span}: too wide to count "
                             "(pairs) in int64; renumber them from 0")
        self.pairs, self.pair_counts = torch.unique(self._pair_key(g_pids, g_camids), return_counts=True)

    def _pair_key(self, pids: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        return (pids - self.pid_low) * self.cam_span + (camids - self.cam_low)

    @staticmethod
    def _lookup(keys: torch.Tensor, counts: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
        if keys.numel() == 0:
            return torch.zeros_like(wanted)
        at = torch.searchsorted(keys, wanted).clamp_max(keys.numel() - 1)
        return torch.where(keys[at] == wanted, counts[at], 0)

    def __call__(self, q_pids: torch.Tensor, q_camids: torch.Tensor) -> torch.Tensor:
        same_id = self._lookup(self.pids, self.pid_counts, q_pids)
        cam_in_range = (q_camids >= self.cam_low) & (q_camids < self.cam_low + self.cam_span)
        key = torch.where(cam_in_range, self._pair_key(q_pids, q_camids), -1)
        same_camera = torch.where(cam_in_range, self._lookup(self.pairs, self.pair_counts, key), 0)
        return torch.where(q_pids == JUNK_ID, 0, same_id - same_camera)


def _check_lists(indices: torch.Tensor, distances: torch.Tensor, num_gallery: int, start: int) -> torch.Tensor:
    """Reject out-of-range, duplicated or misplaced indices and NaN/Inf or unsorted distances;
    returns the mask of found (non-padding) entries. `start` numbers the block's first row."""
    found = indices != MISSING
    bad = (indices < MISSING) | (indices >= num_gallery)
    if bool(bad.any()):
        row, col = (int(i) for i in bad.nonzero()[0])
        raise IgoasError(f"indices[{start + row}, {col}] = {int(indices[row, col])} is outside the gallery "
                         f"(0 to {num_gallery - 1}, or -1 for a missing entry)")
    if bool((found[:, 1:] & ~found[:, :-1]).any()):
        row = int((found[:, 1:] & ~found[:, :-1]).any(1).nonzero()[0])
        raise IgoasError(f"indices row {start + row}: a missing entry (-1) precedes a found one; FAISS pads "
                         "only the end of a row")
    values = distances.masked_fill(~found, 0)
    if not all_finite(values):
        raise IgoasError("distances contain NaN or Inf at found entries (index != -1); check the features "
                         "or the search")
    unsorted = (values[:, 1:] < values[:, :-1]) & found[:, 1:]
    if bool(unsorted.any()):
        row = int(unsorted.any(1).nonzero()[0])
        raise IgoasError(f"distances row {start + row} is not ascending; pass distances (smaller = closer) "
                         "in search order, e.g. 2 - 2 * similarity for an inner-product index")
    by_index = torch.sort(indices, dim=1).values
    if bool(((by_index[:, 1:] == by_index[:, :-1]) & (by_index[:, 1:] != MISSING)).any()):
        raise IgoasError("indices: a gallery entry appears twice in one query's list")
    return found


def _tie_order(indices: torch.Tensor, distances: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
    """Column order putting each row's equal distances in gallery-index order (the tie rule
    of `evaluate_rank`), padding last; a search may return ties in any order."""
    by_index = torch.sort(torch.where(found, indices, torch.iinfo(torch.int64).max), dim=1, stable=True).indices
    keys = distances.masked_fill(~found, torch.inf).gather(1, by_index)
    return by_index.gather(1, torch.sort(keys, dim=1, stable=True).indices)


def _harmonic(n: torch.Tensor) -> torch.Tensor:
    """H(n) = 1 + 1/2 + ... + 1/n (float64, n >= 0), through the digamma function."""
    return torch.digamma(n.double() + 1) - torch.digamma(torch.ones((), dtype=torch.float64))


def evaluate_topk(indices: ArrayLike, distances: ArrayLike, q_pids: ArrayLike, g_pids: ArrayLike, q_camids: ArrayLike,
                  g_camids: ArrayLike, max_rank: int = 50, chunk_size: int | None = None) -> TopKResult:
    """CMC, mAP and mINP of query x k search results (`indices` into the gallery, -1 = none;
    `distances` ascending per row), without the query x gallery matrix.

    Equal to `evaluate_rank` on the full distance matrix when `exact` (every valid query's
    true matches are in its list) and the lists are the first k entries of the exhaustive
    ranking (distance, then gallery index). Otherwise missing matches count at rank
    infinity: lower bounds, with the incomplete queries reported.
    """
    index_t, distance_t = as_tensor(indices, "indices"), as_tensor(distances, "distances")
    if index_t.ndim != 2:
        raise IgoasError(f"indices: expected a 2-D queries x k array, got shape {tuple(index_t.shape)}")
    if index_t.is_floating_point() or index_t.dtype == torch.bool or index_t.is_complex():
        raise IgoasError(f"indices: expected integer gallery indices, got {index_t.dtype}")
    if tuple(distance_t.shape) != tuple(index_t.shape):
        raise IgoasError(f"distances: expected shape {tuple(index_t.shape)} like indices (queries x k), "
                         f"got {tuple(distance_t.shape)}")
    num_query, k = index_t.shape
    q_pids_t, q_camids_t = as_ids(q_pids, "q_pids", num_query), as_ids(q_camids, "q_camids", num_query)
    accumulator = RankAccumulator(g_pids, g_camids, max_rank)
    g_pids_t, g_camids_t = accumulator.g_pids, accumulator.g_camids
    count_matches = MatchCounter(g_pids_t.cpu(), g_camids_t.cpu())
    if not distance_t.is_floating_point():
        distance_t = distance_t.double()

    incomplete, missing_total, ap_extra, inp_extra = [], 0, 0.0, 0.0
    cmc_exact = max_rank
    step = rows_per_block(k, chunk_size)
    for start in range(0, num_query, step):
        block = slice(start, start + step)
        idx, dist = index_t[block].to(torch.int64), distance_t[block]
        found = _check_lists(idx, dist, len(g_pids_t), start)
        order = _tie_order(idx, dist, found)
        idx, found = idx.gather(1, order), found.gather(1, order)
        device = idx.device
        qp, qc = q_pids_t[block].to(device), q_camids_t[block].to(device)
        safe = idx.clamp_min(0)
        gp, gc = g_pids_t.to(device)[safe], g_camids_t.to(device)[safe]
        same_id = (gp == qp[:, None]) & (qp[:, None] != JUNK_ID)
        kept = found & (gp != JUNK_ID) & ~(same_id & (gc == qc[:, None]))
        is_match = kept & same_id
        rank = torch.cumsum(kept, 1) - 1  # rank among the kept entries = rank in the exhaustive ranking
        match_index = torch.cumsum(is_match, 1)
        match_row, match_col = is_match.nonzero(as_tuple=True)
        total = count_matches(q_pids_t[block].cpu(), q_camids_t[block].cpu())  # counts live on the CPU
        accumulator._accumulate(*(t.cpu() for t in (match_row, rank[match_row, match_col],
                                                     match_index[match_row, match_col])), total)

        # What the list does not show: the number, and the bounds with them right after the list.
        num_found = is_match.sum(1).cpu()
        num_kept = kept.sum(1).cpu()
        missing = total - num_found
        lacking = (total > 0) & (missing > 0)
        incomplete.append(torch.nonzero(lacking).flatten() + start)
        missing_total += int(missing[lacking].sum())
        m, n_found, n_kept, n_total = (t[lacking].double() for t in (missing, num_found, num_kept, total))
        # sum over the missing i = 1..m of (n_found + i) / (n_kept + i), in closed form.
        precision_sum = m - (n_kept - n_found) * (_harmonic(n_kept + m) - _harmonic(n_kept))
        ap_extra += float((precision_sum / n_total).sum())
        inp_extra += float((n_total / (n_kept + m)).sum())
        unseen_first = lacking & (num_found == 0)
        if bool(unseen_first.any()):
            cmc_exact = min(cmc_exact, int(num_kept[unseen_first].min()))

    base = accumulator.result()
    incomplete_queries = torch.cat(incomplete).numpy() if incomplete else np.zeros(0, dtype=np.int64)
    return TopKResult(
        cmc=base.cmc,
        mAP=base.mAP,
        mINP=base.mINP,
        num_valid_queries=base.num_valid_queries,
        num_skipped_queries=base.num_skipped_queries,
        exact=len(incomplete_queries) == 0,
        num_incomplete=len(incomplete_queries),
        incomplete_queries=incomplete_queries,
        num_missing_matches=missing_total,
        cmc_exact_ranks=cmc_exact,
        mAP_upper=base.mAP + ap_extra / base.num_valid_queries,
        mINP_upper=base.mINP + inp_extra / base.num_valid_queries,
    )
