"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) without any N x N matrix.

The reference algorithm builds dense (q+g) x (q+g) distance, rank and encoding matrices,
which is 9.5 GB on Market-1501 and far more on MSMT17. Only a few entries of each are ever
used, so here:

1. distances are computed in row blocks, each against its own and the later columns only
   (the matrix is symmetric: half the products); a block gives its rows, and through its
   transpose the later rows, their maxima (the reference's normalisation) and nearest
   candidates, and the query rows their query-gallery distances (part of the output). The
   candidates are then ranked by exact distance in stable order (float32 for speed, float64
   wherever rounding could swap two neighbours, since one swap changes whole k-reciprocal
   sets);
2. k-reciprocal sets and their expansion are vectorised over those neighbour lists;
3. the encodings V live as sorted (row, column, value) triples, i.e. CSR without pointers;
4. the Jaccard term is gathered through an inverted index over the gallery rows of V, one
   block of queries at a time, straight into the query x gallery output.

Distances are the features' squared Euclidean distances, as in the original code.
"""
from __future__ import annotations

import numpy as np
import torch

from igoas.evaluation.arrays import BLOCK_ELEMENTS, ArrayLike, as_feature_pair, rows_per_block
from igoas.evaluation.distance import squared_distance_minus_query_norm
from igoas.evaluation.neighbours import MARGIN, refine_nearest
from igoas.evaluation.segments import gather_ranges, position_in_segment, segment_starts
from igoas.utils.errors import IgoasError

# Rows per step of the sparse stages; their temporaries are a few hundred bytes per row.
SPARSE_ROWS = 4096
# Gathered (query, gallery) pairs per step of the Jaccard stage.
JACCARD_PAIRS = 2**24
# Neighbours kept per row, in units of the k1 + 1 the sets need: with twice as many, nearly
# every member of an expanded set has a stored distance (99.9 % on Market-like data).
STORED_NEIGHBOURS = 2


def k_reciprocal_rerank(
    qf: ArrayLike,
    gf: ArrayLike,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Re-ranked query x gallery distances (float32), the reference algorithm's output.

    `k1` sizes the k-reciprocal neighbourhoods, `k2` the local query expansion of the
    encodings, `lambda_value` the weight of the original distance against the Jaccard one.
    `chunk_size` caps the rows of each dense distance block (memory vs. speed).
    """
    if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
        raise IgoasError(f"re-ranking needs k1 >= 1, k2 >= 1 and 0 <= lambda <= 1, got {k1}, {k2}, {lambda_value}")
    queries, gallery = as_feature_pair(qf, gf)
    features = torch.cat([queries, gallery]).float()  # the reference works in float32
    num_query = queries.shape[0]
    output = torch.empty(num_query, gallery.shape[0], dtype=torch.float32, device=features.device)

    stored = max(STORED_NEIGHBOURS * (k1 + 1), k2)
    neighbours, nearest, scale = _neighbours_and_scale(features, stored, num_query, output, chunk_size)
    forward = min(k1 + 1, features.shape[0])
    half = min(int(round(k1 / 2)) + 1, features.shape[0])  # Python rounds halves to even, as np.around
    rows, cols = _expanded_sets(neighbours, forward, half)
    values = _gaussian_encoding(features, rows, cols, scale, neighbours, nearest)
    if k2 != 1:
        rows, cols, values = _local_expansion(rows, cols, values, neighbours[:, :k2], features.shape[0])
    _blend_jaccard(output, rows, cols, values, num_query, lambda_value)
    return output.cpu().numpy()


def _neighbours_and_scale(
    features: torch.Tensor, k: int, num_query: int, output: torch.Tensor, chunk_size: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stable k-nearest lists, their normalised distances and the row maxima.

    Also fills `output` with the normalised query-gallery distances. Distances are
    symmetric, so each block of rows is measured against its own and the later columns
    only (half the products of the full matrix): the block's rows take their candidates
    and maxima from it, and the later rows theirs from its transpose.
    """
    total = features.shape[0]
    k = min(k, total)
    probe = min(k + MARGIN, total)
    norms = features.pow(2).sum(1)
    candidates = torch.full((total, probe), torch.inf, dtype=torch.float32, device=features.device)
    candidate_columns = torch.zeros(total, probe, dtype=torch.int64, device=features.device)
    row_max = torch.full((total,), -torch.inf, dtype=torch.float32, device=features.device)
    step = rows_per_block(total, chunk_size)
    # Last block first: the later rows then hold candidates from their own blocks already,
    # so only the few entries of a transpose that beat a row's current worst are merged.
    for start in reversed(range(0, total, step)):
        stop = min(start + step, total)
        # Squared distances of rows start:stop to columns start: (the formula's order: the
        # column norms folded into the product, then the row norms).
        block = squared_distance_minus_query_norm(features[start:stop], features[start:], norms[start:])
        block.add_(norms[start:stop, None])
        _keep_nearest(candidates, candidate_columns, slice(start, stop), block, start)
        row_max[start:stop] = torch.maximum(row_max[start:stop], block.amax(1))
        if stop < total:
            later = block[:, stop - start:]
            _keep_improving(candidates, candidate_columns, stop, later, start)
            row_max[stop:] = torch.maximum(row_max[stop:], later.amax(0))
        if start < num_query:
            query_rows = min(stop, num_query) - start
            output[start : start + query_rows] = block[:query_rows, num_query - start:]
    # All-identical features give a zero row; the reference would divide 0 by 0.
    scale = row_max.clamp_min_(0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    output.clamp_min_(0).div_(scale[:num_query, None])

    neighbours = torch.empty(total, k, dtype=torch.int64, device=features.device)
    nearest = torch.empty(total, k, dtype=torch.float32, device=features.device)

    def row_distances(row: int) -> torch.Tensor:
        return torch.addmv(norms + norms[row], features, features[row], alpha=-2).double()

    for start in range(0, total, SPARSE_ROWS):
        rows = slice(start, min(start + SPARSE_ROWS, total))
        distances, neighbours[rows] = refine_nearest(
            candidates[rows].double(), candidate_columns[rows], features[rows], features, norms, k,
            lambda row, first=start: row_distances(first + row))
        nearest[rows] = (distances / scale[rows, None].double()).float()
    return neighbours, nearest, scale


def _keep_nearest(candidates: torch.Tensor, columns: torch.Tensor, rows: slice, block: torch.Tensor,
                  first_column: int) -> None:
    """Merge `block`'s smallest entries (its columns start at `first_column`) into the rows'
    running candidates, which stay the row's smallest distances seen so far, ascending."""
    found, found_columns = torch.topk(block, min(candidates.shape[1], block.shape[1]), dim=1, largest=False)
    _merge(candidates, columns, torch.arange(rows.start, rows.stop, device=block.device), found,
           found_columns + first_column)


def _keep_improving(candidates: torch.Tensor, columns: torch.Tensor, first_row: int, transposed: torch.Tensor,
                    first_column: int) -> None:
    """Merge the entries of `transposed.T` (rows from `first_row`, columns from `first_column`)
    that beat their row's current worst candidate: a top-k of its many short rows would cost
    several times the distances themselves, and few entries qualify."""
    worst = candidates[first_row:, -1]
    column, row = (transposed < worst[None, :]).nonzero(as_tuple=True)
    if not row.numel():
        return
    values = transposed[column, row]
    order = torch.sort(row, stable=True).indices
    row, column, values = row[order], column[order], values[order]
    affected, group, counts = torch.unique_consecutive(row, return_inverse=True, return_counts=True)
    slot = position_in_segment(group, affected.numel())
    width = int(counts.max())
    padded = torch.full((affected.numel(), width), torch.inf, dtype=candidates.dtype, device=row.device)
    padded_columns = torch.zeros(affected.numel(), width, dtype=columns.dtype, device=row.device)
    padded[group, slot], padded_columns[group, slot] = values, column + first_column
    _merge(candidates, columns, affected + first_row, padded, padded_columns)


def _merge(candidates: torch.Tensor, columns: torch.Tensor, rows: torch.Tensor, found: torch.Tensor,
           found_columns: torch.Tensor) -> None:
    """candidates[rows] <- the smallest of (candidates[rows], found), ascending, with their columns."""
    merged = torch.cat([candidates[rows], found], dim=1)
    merged_columns = torch.cat([columns[rows], found_columns], dim=1)
    best, position = torch.topk(merged, candidates.shape[1], dim=1, largest=False, sorted=True)
    candidates[rows], columns[rows] = best, merged_columns.gather(1, position)


def _reciprocal(neighbours: torch.Tensor, k: int, rows: torch.Tensor) -> torch.Tensor:
    """For `rows`, which of their first k neighbours also have the row among their own first k."""
    back = neighbours[neighbours[rows, :k], :k]
    return (back == rows[:, None, None]).any(2)


def _expanded_sets(neighbours: torch.Tensor, forward: int, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted (row, column) pairs of each row's expanded k-reciprocal set R*."""
    total = neighbours.shape[0]
    all_rows = torch.arange(total, device=neighbours.device)
    half_reciprocal = torch.cat([_reciprocal(neighbours, half, all_rows[s : s + SPARSE_ROWS])
                                 for s in range(0, total, SPARSE_ROWS)])
    pair_rows, pair_cols = [], []
    for start in range(0, total, SPARSE_ROWS):
        rows = all_rows[start : start + SPARSE_ROWS]
        first = neighbours[rows, :forward]
        in_set = _reciprocal(neighbours, forward, rows)
        candidates = neighbours[first, :half]  # each candidate's own half-size neighbourhood
        candidate_ok = half_reciprocal[first]
        shared = (candidates[..., None] == first[:, None, None, :]) & in_set[:, None, None, :]
        overlap = (shared.any(3) & candidate_ok).sum(2)
        # Same float64 expression as the reference, so boundary cases decide alike.
        accept = in_set & (overlap.double() > (2.0 / 3.0) * candidate_ok.sum(2).double())
        added = candidates.masked_fill(~(candidate_ok & accept[..., None]), -1).flatten(1)
        members = torch.cat([first.masked_fill(~in_set, -1), added], dim=1).sort(dim=1).values
        fresh = torch.ones_like(members, dtype=torch.bool)
        fresh[:, 1:] = members[:, 1:] != members[:, :-1]
        local_row, slot = ((members >= 0) & fresh).nonzero(as_tuple=True)
        pair_rows.append(rows[local_row])
        pair_cols.append(members[local_row, slot])
    return torch.cat(pair_rows), torch.cat(pair_cols)


def _gaussian_encoding(
    features: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    scale: torch.Tensor,
    neighbours: torch.Tensor,
    nearest: torch.Tensor,
) -> torch.Tensor:
    """V values: exp(-normalised distance), normalised to sum 1 over each row's set.

    Almost every member of R*(i) is among i's stored nearest neighbours, whose distances
    are known; only the rest are recomputed from the features.
    """
    distance = torch.empty(rows.numel(), dtype=torch.float32, device=features.device)
    squared_norms = features.pow(2).sum(1)
    step = max(1, BLOCK_ELEMENTS // max(neighbours.shape[1], features.shape[1]))
    for start in range(0, rows.numel(), step):
        r, c = rows[start : start + step], cols[start : start + step]
        found = neighbours[r] == c[:, None]
        known = found.any(1)
        part = nearest[r, found.to(torch.uint8).argmax(1)]
        missing = (~known).nonzero(as_tuple=True)[0]
        if missing.numel():
            mr, mc = r[missing], c[missing]
            dot = (features[mr] * features[mc]).sum(1)
            part[missing] = (squared_norms[mc] - 2 * dot + squared_norms[mr]).clamp_min_(0) / scale[mr]
        distance[start : start + step] = part
    weights = torch.exp(-distance)
    totals = torch.zeros(features.shape[0], dtype=torch.float32, device=features.device).index_add_(0, rows, weights)
    return weights / totals[rows]


def _local_expansion(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, sources: torch.Tensor, total: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row of V replaced by the mean of the rows of its first k2 neighbours."""
    starts, lengths = segment_starts(rows, total)
    k2 = sources.shape[1]
    out_rows, out_cols, out_values = [], [], []
    for start in range(0, total, SPARSE_ROWS):
        block = sources[start : start + SPARSE_ROWS]
        source = block.reshape(-1)
        owner = torch.arange(start, start + block.shape[0], device=rows.device).repeat_interleave(k2)
        positions = gather_ranges(starts[source], lengths[source])
        target = torch.repeat_interleave(owner, lengths[source])
        keys, inverse = torch.unique(target * total + cols[positions], return_inverse=True)
        sums = torch.zeros(keys.numel(), dtype=values.dtype, device=values.device)
        sums.index_add_(0, inverse, values[positions])
        out_rows.append(keys // total)
        out_cols.append(keys % total)
        out_values.append(sums / k2)
    return torch.cat(out_rows), torch.cat(out_cols), torch.cat(out_values)


def _blend_jaccard(
    output: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor,
    num_query: int, lambda_value: float,
) -> None:
    """output <- (1 - lambda) * Jaccard(V_query, V_gallery) + lambda * output, block by block."""
    num_gallery = output.shape[1]
    total = num_query + num_gallery
    is_gallery = rows >= num_query
    # Inverted index: for every column of V, the gallery rows where it is non-zero.
    by_column = torch.sort(cols[is_gallery], stable=True)
    index_rows = rows[is_gallery][by_column.indices] - num_query
    index_values = values[is_gallery][by_column.indices]
    column_starts, column_lengths = segment_starts(by_column.values, total)

    query_entries = ~is_gallery
    q_rows, q_cols, q_values = rows[query_entries], cols[query_entries], values[query_entries]
    q_starts, q_lengths = segment_starts(q_rows, num_query)
    work = torch.zeros(num_query + 1, dtype=torch.int64, device=rows.device)
    work[1:] = torch.cumsum(torch.zeros(num_query, dtype=torch.int64, device=rows.device)
                            .index_add_(0, q_rows, column_lengths[q_cols]), 0)
    max_rows = rows_per_block(num_gallery)
    start = 0
    while start < num_query:
        # As many queries as keep the gathered pairs (and the dense block) within budget.
        stop = int(torch.searchsorted(work, work[start] + JACCARD_PAIRS, right=True)) - 1
        stop = min(max(stop, start + 1), start + max_rows, num_query)
        first, last = int(q_starts[start]), int(q_starts[stop - 1] + q_lengths[stop - 1])
        entry_cols = q_cols[first:last]
        lengths = column_lengths[entry_cols]
        positions = gather_ranges(column_starts[entry_cols], lengths)
        local_rows = torch.repeat_interleave(q_rows[first:last] - start, lengths)
        overlap = torch.minimum(torch.repeat_interleave(q_values[first:last], lengths), index_values[positions])
        shared = torch.zeros((stop - start) * num_gallery, dtype=torch.float32, device=output.device)
        shared.index_add_(0, local_rows * num_gallery + index_rows[positions], overlap)
        shared = shared.view(stop - start, num_gallery)
        # In place, in the reference's operation order: jaccard = 1 - shared / (2 - shared).
        jaccard = shared.div_(torch.rsub(shared, 2)).neg_().add_(1)
        output[start:stop].mul_(lambda_value).add_(jaccard.mul_(1 - lambda_value))
        start = stop
