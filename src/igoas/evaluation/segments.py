"""Helpers for ragged index arrays (CSR-like: one segment of entries per row)."""
from __future__ import annotations

import torch


def gather_ranges(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Concatenation of arange(start, start + length) for every (start, length) pair."""
    ends = torch.cumsum(lengths, 0)
    total = int(ends[-1]) if ends.numel() else 0
    offsets = torch.repeat_interleave(starts - (ends - lengths), lengths, output_size=total)
    return offsets + torch.arange(total, device=starts.device)


def segment_starts(rows: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First position and length of each row's segment in a row-sorted entry list."""
    lengths = torch.bincount(rows, minlength=num_rows)
    return torch.cumsum(lengths, 0) - lengths, lengths


def position_in_segment(rows: torch.Tensor, num_rows: int) -> torch.Tensor:
    """0-based position of each entry within its row, for a row-sorted entry list."""
    starts, _ = segment_starts(rows, num_rows)
    return torch.arange(rows.numel(), device=rows.device) - starts[rows]
