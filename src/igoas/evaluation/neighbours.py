"""Exact k smallest entries per row in stable order (distance, then column index).

`torch.topk` is fast but leaves the order of equal values unspecified; the reference
algorithms rank with a sort, so equal distances (duplicate images) must come out by
column index to give the same neighbour sets. Rows whose k-th and (k+1)-th values tie
are rare and fall back to a full stable sort of that row.
"""
from __future__ import annotations

import torch


def stable_topk(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` smallest entries of each row and their columns, as the first `k` of a stable argsort."""
    num_columns = values.shape[1]
    k = min(k, num_columns)
    probe = min(k + 1, num_columns)
    probe_values, columns = torch.topk(values, probe, dim=1, largest=False, sorted=True)
    columns = columns[:, :k]
    # Equal values inside the top k: reorder by column, then stable sort by value.
    columns = columns.gather(1, torch.sort(columns, dim=1).indices)
    columns = columns.gather(1, torch.sort(values.gather(1, columns), dim=1, stable=True).indices)
    if probe > k:
        # A tie across the k-th place means topk may have picked the wrong equal entries.
        tied_rows = (probe_values[:, k - 1] == probe_values[:, k]).nonzero(as_tuple=True)[0]
        if tied_rows.numel():
            columns[tied_rows] = torch.sort(values[tied_rows], dim=1, stable=True).indices[:, :k]
    return values.gather(1, columns), columns
