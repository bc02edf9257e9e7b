"""Exact k smallest entries per row in stable order (distance, then column index).

`torch.topk` is fast but leaves the order of equal values unspecified; the reference
algorithms rank with a sort, so equal distances (duplicate images) must come out by
column index to give the same neighbour sets. Rows whose k-th and (k+1)-th values tie
are rare and fall back to a full stable sort of that row.
"""
from __future__ import annotations

from typing import Callable

import torch


def stable_topk(
    values: torch.Tensor, k: int, key: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` smallest entries of each row and their columns, as the first `k` of a stable argsort.

    With `key`, rows are ranked by `key(values, rows)` instead: an elementwise map that never
    decreases along a row (e.g. a per-row shift and scale; `rows` holds each value's row
    index). Selection then runs on the raw values and only the few selected entries are
    mapped; the returned values are the mapped ones.
    """
    if key is None:
        key = _unchanged
    num_columns = values.shape[1]
    k = min(k, num_columns)
    probe = min(k + 1, num_columns)
    rows = torch.arange(values.shape[0], device=values.device)[:, None]
    probe_values, columns = torch.topk(values, probe, dim=1, largest=False, sorted=True)
    probe_keys = key(probe_values, rows)
    columns = columns[:, :k]
    # Equal keys inside the top k: reorder by column, then stable sort by key.
    columns = columns.gather(1, torch.sort(columns, dim=1).indices)
    columns = columns.gather(1, torch.sort(key(values.gather(1, columns), rows), dim=1, stable=True).indices)
    if probe > k:
        # A tie across the k-th place means topk may have picked the wrong equal entries.
        tied = (probe_keys[:, k - 1] == probe_keys[:, k]).nonzero(as_tuple=True)[0]
        if tied.numel():
            tied_keys = key(values[tied], tied[:, None])
            columns[tied] = torch.sort(tied_keys, dim=1, stable=True).indices[:, :k]
    return key(values.gather(1, columns), rows), columns


def _unchanged(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return values


# Allowed rounding of a float32 squared distance ||a - b||^2, relative to ||a||^2 + max ||b||^2.
# Float32 dot products of 1024-d vectors err by a few 1e-7 of that in practice; entries closer
# than twice this to a neighbour in the ranking are re-measured in float64, and any re-measured
# entry that erred by more sends its whole row to the float64 path.
ROUNDING = 2.0**-16
# Candidates taken beyond k, so that the true k nearest are almost always among them.
MARGIN = 8


def exact_nearest(
    block: torch.Tensor, queries: torch.Tensor, gallery: torch.Tensor, gallery_norms: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest gallery columns of each query, ranked by exact squared distance, ties by column.

    `block` holds the fast float32 ||g||^2 - 2 q.g for these queries (one row each); its
    `k + MARGIN` smallest entries are the candidates that `refine_nearest` ranks exactly.
    Returns the float64 squared distances (clamped at 0) and their columns.
    """
    probe = min(min(k, block.shape[1]) + MARGIN, block.shape[1])
    query_norms = queries.double().pow(2).sum(1)
    raw, columns = torch.topk(block, probe, dim=1, largest=False, sorted=True)
    return refine_nearest(raw.double() + query_norms[:, None], columns, queries, gallery, gallery_norms, k,
                          lambda row: block[row].double() + query_norms[row])


def refine_nearest(
    approx: torch.Tensor, columns: torch.Tensor, queries: torch.Tensor, gallery: torch.Tensor,
    gallery_norms: torch.Tensor, k: int, row_approx: Callable[[int], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates ranked by float32 squared distance -> the exact k nearest, ties by column.

    `approx` (one row per query, ascending) holds the candidates' fast squared distances
    and `columns` their gallery columns, the `k + MARGIN` smallest of each row; `row_approx(i)`
    gives query i's fast distances to the whole gallery, for the rare rows whose candidates
    may miss a neighbour. Near-ties decide neighbour sets (re-ranking), and float32 rounding
    can order two almost equal distances either way, so only the entries whose order the
    rounding could change are re-measured in float64. Returns the float64 squared distances
    (clamped at 0) and their columns.
    """
    total = gallery.shape[0]
    k = min(k, total)
    probe = approx.shape[1]
    query_norms = queries.double().pow(2).sum(1, keepdim=True)
    allowance = ROUNDING * (query_norms + float(gallery_norms.max()))
    close = approx[:, 1:] - approx[:, :-1] < 2 * allowance
    uncertain = torch.zeros_like(approx, dtype=torch.bool)
    uncertain[:, 1:] |= close
    uncertain[:, :-1] |= close
    rows, slots = uncertain.nonzero(as_tuple=True)
    exact = approx.clone()
    exact[rows, slots] = pair_distances(queries, gallery, rows, columns[rows, slots])
    erred = torch.zeros(approx.shape[0], dtype=torch.bool, device=approx.device)
    erred[rows[(exact[rows, slots] - approx[rows, slots]).abs() > allowance[rows, 0]]] = True
    crowded = torch.zeros_like(erred)
    if probe < total:  # a nearer column might hide beyond the candidates (many near-equal distances)
        crowded = approx[:, probe - 1] - approx[:, k - 1] <= 2 * allowance[:, 0]
    exact = exact.clamp_min_(0)
    by_column = torch.sort(columns, dim=1).indices
    columns, exact = columns.gather(1, by_column), exact.gather(1, by_column)
    order = torch.sort(exact, dim=1, stable=True).indices[:, :k]
    distances, columns = exact.gather(1, order), columns.gather(1, order)
    for row in (crowded | erred).nonzero(as_tuple=True)[0].tolist():
        # Every column within rounding of the k-th distance can belong; where rounding itself
        # exceeded the allowance, every column is measured in float64.
        limit = float("inf") if erred[row] else float(approx[row, k - 1] + 2 * allowance[row, 0])
        candidates = (row_approx(row) <= limit).nonzero(as_tuple=True)[0]
        measured = pair_distances(queries, gallery, torch.full_like(candidates, row), candidates).clamp_min_(0)
        values, order = torch.sort(measured, stable=True)  # candidates come in column order
        distances[row], columns[row] = values[:k], candidates[order[:k]]
    return distances, columns


def pair_distances(
    queries: torch.Tensor, gallery: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor
) -> torch.Tensor:
    """Float64 ||queries[rows] - gallery[columns]||^2, pair by pair, in slices of bounded memory."""
    out = torch.empty(rows.numel(), dtype=torch.float64, device=queries.device)
    step = max(1, 2**22 // max(queries.shape[1], 1))
    for start in range(0, rows.numel(), step):
        r, c = rows[start : start + step], columns[start : start + step]
        out[start : start + step] = (queries[r].double() - gallery[c].double()).pow_(2).sum(1)
    return out
