"""The features file `igoas extract` writes and `igoas search build` reads.

Two containers hold the same content, chosen by the file suffix: `.safetensors` (safe to
open from anyone, memory-mappable; strings go in its JSON metadata) and `.npz` (numpy
only). Content: `embeddings` (N x D float32, unit length), `pids` and `camids` (N int64,
-1 where unknown), the image `paths`, the `bad_paths` that could not be read, and a
free-form `metadata` dict (checkpoint, preprocessing, split, ...).
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from igoas.utils.errors import IgoasError
from igoas.utils.extras import optional
from igoas.utils.fileio import atomic_write

FEATURES_FORMAT = "igoas-features"
FEATURES_FORMAT_VERSION = 1


@dataclass
class Features:
    """Embeddings with the image each came from, its identity and camera (-1 when unknown)."""

    embeddings: np.ndarray
    paths: list[str]
    pids: np.ndarray
    camids: np.ndarray
    bad_paths: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        self.pids = np.asarray(self.pids, dtype=np.int64)
        self.camids = np.asarray(self.camids, dtype=np.int64)
        self.paths = [str(p) for p in self.paths]
        self.bad_paths = [str(p) for p in self.bad_paths]
        count = len(self.paths)
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != count:
            raise IgoasError(f"features: {self.embeddings.shape} embeddings for {count} paths; expected {count} x D")
        if self.pids.shape != (count,) or self.camids.shape != (count,):
            raise IgoasError(
                f"features: pids {self.pids.shape} / camids {self.camids.shape} do not match {count} paths"
            )
        broken = np.flatnonzero(~np.isfinite(self.embeddings).all(axis=1))
        if broken.size:
            raise IgoasError(
                f"features: {broken.size} of {count} embedding(s) hold NaN or Inf (first: {self.paths[broken[0]]}); "
                "the model that embedded them gives non-finite outputs (diverged weights, or a damaged checkpoint "
                "or preprocessing), so nothing is written, indexed or scored from them: use an earlier checkpoint, "
                "or retrain with a lower optim.lr"
            )

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def bad(self) -> dict[str, str]:
        """Each unreadable file with the reason it failed (`metadata["bad_reasons"]`)."""
        reasons = self.metadata.get("bad_reasons") or {}
        return {path: str(reasons.get(path, "")) for path in self.bad_paths}


def save_features(path: str | os.PathLike, features: Features) -> Path:
    """Write `features` atomically; the suffix (.safetensors or .npz) picks the container."""

    path = Path(path)
    writer = _writer(path)
    strings = {
        "format": FEATURES_FORMAT,
        "format_version": FEATURES_FORMAT_VERSION,
        "paths": features.paths,
        "bad_paths": features.bad_paths,
        "metadata": features.metadata,
    }
    arrays = {"embeddings": features.embeddings, "pids": features.pids, "camids": features.camids}
    return atomic_write(path, lambda handle: handle.write(writer(arrays, json.dumps(strings))))


def load_features(path: str | os.PathLike) -> Features:
    """Read a features file written by `save_features`, with clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise IgoasError(f"{path}: no such features file; write one with `igoas extract CKPT IMAGES --out {path}`")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise IgoasError(f"{path}: unknown features file type {path.suffix!r}; use .safetensors or .npz")
    try:
        arrays, text = reader(path)
        strings = json.loads(text)
    except IgoasError:
        raise
    except Exception as err:  # each container library raises its own types for corrupt files
        raise IgoasError(
            f"{path}: cannot be read as a features file ({type(err).__name__}: {err}); re-run extract"
        ) from None
    if strings.get("format") != FEATURES_FORMAT:
        raise IgoasError(
            f"{path}: not an igoas features file (no format '{FEATURES_FORMAT}'); write it with `igoas extract`"
        )
    missing = [key for key in ("embeddings", "pids", "camids") if key not in arrays]
    missing += [] if isinstance(strings.get("paths"), list) else ["paths"]
    if missing:
        raise IgoasError(f"{path}: a features file without {', '.join(missing)}; it is damaged or was edited: "
                         "re-run `igoas extract`")
    try:
        return Features(embeddings=arrays["embeddings"], paths=strings["paths"], pids=arrays["pids"],
                        camids=arrays["camids"], bad_paths=strings.get("bad_paths", []),
                        metadata=strings.get("metadata", {}))
    except IgoasError as err:
        raise IgoasError(f"{path}: {err}") from None


def check_features_path(path: str | os.PathLike) -> Path:
    """`path` as a Path when its suffix names a features container; an IgoasError otherwise
    (callers check before embedding anything, not after)."""
    path = Path(path)
    _writer(path)
    if path.is_dir():
        raise IgoasError(f"{path}: is a folder; give a file name ending in .safetensors or .npz")
    return path


def _writer(path: Path) -> Callable[[dict[str, np.ndarray], str], bytes]:
    writer = _WRITERS.get(path.suffix.lower())
    if writer is None:
        raise IgoasError(f"{path}: unknown features file type {path.suffix!r}; name it .safetensors or .npz")
    return writer


def _safetensors_bytes(arrays: dict[str, np.ndarray], text: str) -> bytes:
    save = optional("safetensors.numpy", ".safetensors features files").save

    return save(arrays, metadata={"igoas": text})


def _read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], str]:
    safe_open = optional("safetensors", ".safetensors features files").safe_open

    with safe_open(str(path), framework="numpy") as handle:
        text = (handle.metadata() or {}).get("igoas")
        if text is None:
            raise IgoasError(f"{path}: a safetensors file without igoas metadata; write it with `igoas extract`")
        return {key: handle.get_tensor(key) for key in handle.keys()}, text


def _npz_bytes(arrays: dict[str, np.ndarray], text: str) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, igoas=np.array(text), **arrays)
    return buffer.getvalue()


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], str]:
    with np.load(path, allow_pickle=False) as data:
        if "igoas" not in data:
            raise IgoasError(f"{path}: an .npz file without igoas metadata; write it with `igoas extract`")
        return {key: data[key] for key in data.files if key != "igoas"}, str(data["igoas"])


_WRITERS: dict[str, Callable[[dict[str, np.ndarray], str], bytes]] = {
    ".safetensors": _safetensors_bytes,
    ".npz": _npz_bytes,
}
_READERS: dict[str, Callable[[Path], tuple[dict[str, np.ndarray], str]]] = {
    ".safetensors": _read_safetensors,
    ".npz": _read_npz,
}


def features_from_arrays(
    embeddings: np.ndarray,
    paths: Sequence[str],
    pids: Sequence[int] | None = None,
    camids: Sequence[int] | None = None,
    **metadata: Any,
) -> Features:
    """Convenience builder for user arrays: unknown identities/cameras become -1."""
    count = len(paths)
    return Features(
        embeddings=embeddings,
        paths=list(paths),
        pids=np.full(count, -1) if pids is None else pids,
        camids=np.full(count, -1) if camids is None else camids,
        metadata=dict(metadata),
    )
