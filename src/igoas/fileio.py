"""Atomic file writes: every output igoas writes is either complete or absent.

A temporary file in the target's folder is written, flushed to disk and renamed over the
target, so an interrupted run never leaves a half-written checkpoint, index, figure or
metrics file that a later step could mistake for a finished one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(binary_file)` on a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike[str], document: Any, indent: int | None = 2) -> Path:
    """Write `document` as UTF-8 JSON, atomically."""
    text = json.dumps(document, indent=indent) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
