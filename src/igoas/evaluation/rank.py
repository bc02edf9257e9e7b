"""CMC, mAP and mINP from distances under the standard re-identification protocol.

Protocol (torchreid's / Market-1501's): for each query, gallery entries with the same
identity AND the same camera are dropped, entries with identity -1 (junk) are taken out of
the ranking, and a query without any remaining true match is skipped and counted.
Ties in distance are broken by gallery index (a stable sort), as `np.argsort(kind="stable")`.

Speed without a compiled evaluator: a query's metrics only depend on where its true
matches land, so instead of sorting whole rows, each block of queries keeps only the
gallery entries not farther than its farthest true match, and sorts those.
"""
from __future__ import annotations

import numpy as np
import torch

from igoas.evaluation.arrays import ArrayLike, all_finite, as_ids, as_tensor, rows_per_block
from igoas.evaluation.result import RankResult
from igoas.evaluation.segments import gather_ranges, position_in_segment
from igoas.utils.errors import IgoasError

JUNK_ID = -1
# Above 1/DENSE_FRACTION of a block's entries as candidates, gathering them costs more than
# sorting whole rows.
DENSE_FRACTION = 4


class RankAccumulator:
    """Sums per-query metrics over blocks of queries scored against one gallery; `result()` averages them."""

    def __init__(self, g_pids: ArrayLike, g_camids: ArrayLike, max_rank: int = 50) -> None:
        if max_rank < 1:
            raise IgoasError(f"max_rank must be at least 1, got {max_rank}")
        self.max_rank = max_rank
        self.g_pids = as_ids(g_pids, "g_pids", len(g_pids))
        self.g_camids = as_ids(g_camids, "g_camids", len(self.g_pids))
        # Gallery indices grouped by identity: true matches are then found without a dense pass.
        self._sorted_pids, self._by_identity = torch.sort(self.g_pids, stable=True)
        self.first_match_counts = np.zeros(max_rank, dtype=np.int64)
        self.ap_sum = 0.0
        self.inp_sum = 0.0
        self.num_valid = 0
        self.num_skipped = 0

    def add(self, distances: ArrayLike, q_pids: ArrayLike, q_camids: ArrayLike) -> None:
        """Score one block of queries (rows of `distances`, smaller = closer) against the whole gallery."""
        distances = as_tensor(distances, "distances")
        if distances.ndim != 2 or distances.shape[1] != len(self.g_pids):
            raise IgoasError(
                f"distances: expected rows x {len(self.g_pids)} gallery entries, got shape {tuple(distances.shape)}"
            )
        if not distances.is_floating_point():
            distances = distances.double()
        if not all_finite(distances):
            raise IgoasError("distances contain NaN or Inf; check the features (a diverged model?) or the matrix")
        rows, device = distances.shape[0], distances.device
        q_pids = as_ids(q_pids, "q_pids", rows).to(device)
        q_camids = as_ids(q_camids, "q_camids", rows).to(device)
        g_pids, g_camids = self.g_pids.to(device), self.g_camids.to(device)
        sorted_pids, by_identity = self._sorted_pids.to(device), self._by_identity.to(device)

        # True matches: same identity, other camera, not junk.
        first = torch.searchsorted(sorted_pids, q_pids)
        group = (torch.searchsorted(sorted_pids, q_pids, right=True) - first) * (q_pids != JUNK_ID)
        match_col = by_identity[gather_ranges(first, group)]
        match_row = torch.repeat_interleave(torch.arange(rows, device=device), group)
        other_camera = g_camids[match_col] != q_camids[match_row]
        match_row, match_col = match_row[other_camera], match_col[other_camera]

        # Only entries up to the farthest true match can change a query's metrics.
        farthest = torch.full((rows,), -torch.inf, dtype=distances.dtype, device=device)
        farthest.scatter_reduce_(0, match_row, distances[match_row, match_col], reduce="amax")
        candidates = distances <= farthest[:, None]
        if int(torch.count_nonzero(candidates)) * DENSE_FRACTION > candidates.numel():
            ranked = _dense_ranks(distances, q_pids, q_camids, g_pids, g_camids)
        else:
            row, col = candidates.nonzero(as_tuple=True)  # row-major: col ascending
            same_id = g_pids[col] == q_pids[row]
            kept = (g_pids[col] != JUNK_ID) & ~(same_id & (g_camids[col] == q_camids[row]))
            row, col, same_id = row[kept], col[kept], same_id[kept]
            ranked = _sparse_ranks(row, distances[row, col], same_id, rows)
        self._accumulate(*(t.cpu() for t in ranked), torch.bincount(match_row, minlength=rows).cpu())

    def _accumulate(
        self, match_row: torch.Tensor, match_rank: torch.Tensor, match_index: torch.Tensor, num_matches: torch.Tensor
    ) -> None:
        """Add per-query AP, INP and first-match ranks, in float64 on the CPU (any device can compute ranks)."""
        rank, index, matches = match_rank.double(), match_index.double(), num_matches.double()
        precision_sum = torch.zeros(len(num_matches), dtype=torch.float64).index_add_(0, match_row, index / (rank + 1))
        is_last = match_index == num_matches[match_row]
        valid = num_matches > 0
        num_valid = int(valid.sum())
        self.ap_sum += float((precision_sum[valid] / matches[valid]).sum())
        self.inp_sum += float((matches[match_row[is_last]] / (rank[is_last] + 1)).sum())
        first_ranks = match_rank[match_index == 1].clamp_max(self.max_rank).numpy()
        self.first_match_counts += np.bincount(first_ranks, minlength=self.max_rank + 1)[: self.max_rank]
        self.num_valid += num_valid
        self.num_skipped += len(num_matches) - num_valid

    def result(self) -> RankResult:
        """The averaged metrics; an error when no query had a valid match."""
        if self.num_valid == 0:
            raise IgoasError(
                f"none of the {self.num_skipped} queries has a true match in the gallery (same identity, "
                "other camera): check that query and gallery share identities and that camera ids are right"
            )
        return RankResult(
            cmc=np.cumsum(self.first_match_counts) / self.num_valid,
            mAP=self.ap_sum / self.num_valid,
            mINP=self.inp_sum / self.num_valid,
            num_valid_queries=self.num_valid,
            num_skipped_queries=self.num_skipped,
        )


def _sorted_true_ranks(values: torch.Tensor, is_true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row, rank (0-based) and 1-based index among the row's true entries, of every true entry (int64).

    Rows must hold their entries in gallery order (padding last, as +inf), so that the
    stable sort orders equal distances by gallery index.
    """
    order = torch.sort(values, dim=1, stable=True).indices
    row, rank = is_true.gather(1, order).nonzero(as_tuple=True)
    return row, rank, position_in_segment(row, values.shape[0]) + 1


def _dense_ranks(
    distances: torch.Tensor, q_pids: torch.Tensor, q_camids: torch.Tensor, g_pids: torch.Tensor, g_camids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Whole-row sort, for blocks where most entries precede some true match (weak features)."""
    same_id = q_pids[:, None] == g_pids[None, :]
    excluded = (same_id & (q_camids[:, None] == g_camids[None, :])) | (g_pids == JUNK_ID)[None, :]
    # Dropped entries sort after every kept one, where they cannot displace a true match.
    return _sorted_true_ranks(distances.masked_fill(excluded, torch.inf), same_id & ~excluded)


def _sparse_ranks(
    row: torch.Tensor, values: torch.Tensor, is_true: torch.Tensor, num_rows: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_sorted_true_ranks` over the kept candidates only (row-major entries).

    Rows are sorted as padded 2-D blocks grouped by length within a factor of two, so one
    long row does not make every row pay for its padding.
    """
    device = row.device
    per_row = torch.bincount(row, minlength=num_rows)
    position = position_in_segment(row, num_rows)
    size_class = torch.where(per_row > 0, torch.ceil(torch.log2(per_row.clamp_min(1).double())).long(), -1)
    out_rows, out_ranks, out_index = [], [], []
    for level in torch.unique(size_class[size_class >= 0]).tolist():
        members = (size_class == level).nonzero(as_tuple=True)[0]
        local = torch.full((num_rows,), -1, dtype=torch.int64, device=device)
        local[members] = torch.arange(members.numel(), device=device)
        entry = local[row] >= 0
        where = (local[row[entry]], position[entry])
        shape = (members.numel(), int(per_row[members].max()))
        padded = torch.full(shape, torch.inf, dtype=values.dtype, device=device).index_put_(where, values[entry])
        flags = torch.zeros(shape, dtype=torch.bool, device=device).index_put_(where, is_true[entry])
        local_row, rank, index = _sorted_true_ranks(padded, flags)
        out_rows.append(members[local_row])
        out_ranks.append(rank)
        out_index.append(index)
    if not out_rows:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty, empty
    return torch.cat(out_rows), torch.cat(out_ranks), torch.cat(out_index)


def evaluate_rank(
    distmat: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
    chunk_size: int | None = None,
) -> RankResult:
    """CMC (length `max_rank`), mAP and mINP of a query x gallery distance matrix (smaller = closer).

    Equal to torchreid's per-query Python evaluator (stable tie order) on data without
    junk entries. When `max_rank` exceeds the number of ranked gallery entries, the CMC
    keeps its final value (every valid query has found its match by then).
    """
    distances = as_tensor(distmat, "distmat")
    if distances.ndim != 2:
        raise IgoasError(f"distmat: expected a 2-D query x gallery matrix, got shape {tuple(distances.shape)}")
    num_query, num_gallery = distances.shape
    q_pids_t, q_camids_t = as_ids(q_pids, "q_pids", num_query), as_ids(q_camids, "q_camids", num_query)
    accumulator = RankAccumulator(as_ids(g_pids, "g_pids", num_gallery), g_camids, max_rank)
    step = rows_per_block(num_gallery, chunk_size)
    for start in range(0, num_query, step):
        block = slice(start, start + step)
        accumulator.add(distances[block], q_pids_t[block], q_camids_t[block])
    return accumulator.result()
