"""Turn caller arrays (numpy or torch) into checked tensors, so every entry point accepts both."""
from __future__ import annotations

from typing import Union

import numpy as np
import torch

from igoas.utils.errors import IgoasError

ArrayLike = Union[np.ndarray, torch.Tensor]

# Elements per dense working block: 2**25 float32 values is 128 MiB, small enough to keep
# MSMT17-sized problems in a few GB and large enough for matmul to run at full speed.
BLOCK_ELEMENTS = 2**25


def as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    """A tensor view of `x` (no copy for numpy arrays or tensors)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        return torch.from_numpy(np.ascontiguousarray(x))
    except (TypeError, ValueError) as error:
        raise IgoasError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__} ({error})") from None


def all_finite(matrix: torch.Tensor) -> bool:
    """Whether a 2-D tensor holds no NaN or Inf. NaN and Inf survive a row sum, so one cheap
    pass decides, with the exact test only where it fails (a sum of huge finite values can
    overflow), instead of a boolean matrix every time."""
    return bool(torch.isfinite(matrix.sum(1)).all()) or bool(torch.isfinite(matrix).all())


def as_features(x: ArrayLike, name: str) -> torch.Tensor:
    """A 2-D, finite, at-least-float32 feature matrix (half precision is widened for stable distances)."""
    f = as_tensor(x, name)
    if f.ndim != 2:
        raise IgoasError(f"{name}: expected a 2-D feature matrix (samples x dimensions), got shape {tuple(f.shape)}")
    if not f.is_floating_point() or f.dtype in (torch.float16, torch.bfloat16):
        f = f.float()
    if not all_finite(f):
        raise IgoasError(f"{name}: features contain NaN or Inf; check the model output (a diverged checkpoint?)")
    return f


def as_feature_pair(qf: ArrayLike, gf: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Query and gallery features checked as a pair: same width, same device (the queries'), same dtype."""
    queries, gallery = as_features(qf, "qf"), as_features(gf, "gf")
    if queries.shape[1] != gallery.shape[1]:
        raise IgoasError(f"qf has {queries.shape[1]}-d features but gf has {gallery.shape[1]}-d ones; they must match")
    dtype = torch.promote_types(queries.dtype, gallery.dtype)
    return queries.to(dtype), gallery.to(device=queries.device, dtype=dtype)


def as_ids(x: ArrayLike, name: str, length: int) -> torch.Tensor:
    """A 1-D int64 vector of identities or cameras with the expected length."""
    ids = as_tensor(x, name)
    if ids.ndim != 1 or ids.numel() != length:
        raise IgoasError(f"{name}: expected {length} ids in a 1-D array, got shape {tuple(ids.shape)}")
    if ids.is_floating_point() and not bool((ids == ids.round()).all()):
        raise IgoasError(f"{name}: ids must be integers, got non-integer values")
    return ids.to(torch.int64)


def rows_per_block(columns: int, requested: int | None = None) -> int:
    """How many rows of a `columns`-wide matrix to process at once."""
    if requested is not None:
        if requested < 1:
            raise IgoasError(f"chunk_size must be a positive number of rows, got {requested}")
        return requested
    return max(1, BLOCK_ELEMENTS // max(columns, 1))
