"""Seeds: one call seeds every generator, `seed_for` derives independent seeds from a run
seed and other integers (rank, epoch, image index), and deterministic kernels are one switch."""
from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def use_deterministic_kernels(enabled: bool) -> None:
    """Ask torch for deterministic kernels (errors on ops that have none) and no autotuning."""
    if enabled:
        # cuBLAS needs this set before its first use to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def seed_for(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, epoch, batch, rank, ...), well spread by hashing."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
