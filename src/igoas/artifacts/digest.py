"""A content hash of a checkpoint's payload, stored in it and checked on load.

torch's zip reader does not check its records' CRCs, so a byte flipped in a weight
tensor (a bad copy, a failing disk) loads without complaint and silently changes the
network. The digest covers every entry: tensors by dtype, shape and bytes, plain values
by type and value, mappings in a fixed key order, so the same payload always gives the
same digest, on any machine and whatever order its dicts were built in.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

import torch

DIGEST_KEY = "content_sha256"


def payload_digest(payload: Mapping[str, Any]) -> str:
    """SHA-256 of every entry of `payload` except the digest itself."""
    digest = hashlib.sha256()
    _feed(digest, {key: value for key, value in payload.items() if key != DIGEST_KEY})
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor:{flat.dtype}:{tuple(value.shape)}:".encode())
        digest.update(memoryview(flat.view(torch.uint8).numpy()))
    elif isinstance(value, Mapping):
        digest.update(f"map:{len(value)}:".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}:{len(value)}:".encode())
        for item in value:
            _feed(digest, item)
    else:  # str, int, float, bool, None, torch.dtype ...: what weights_only loading allows
        digest.update(f"{type(value).__name__}:{value!r};".encode())
