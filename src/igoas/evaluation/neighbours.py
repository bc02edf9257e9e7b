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
