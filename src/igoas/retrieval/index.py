"""A FAISS gallery index over unit-length embeddings, with each entry's path, identity and camera.

Scores are inner products; on unit-length vectors that is cosine similarity and gives the
same ranking as the Euclidean distance the evaluation uses. `flat` is exact (the ranking
equals brute force); `ivf` and `hnsw` trade a little recall for speed on galleries of
hundreds of thousands of images. An index is saved as two files written atomically: the
FAISS index itself and a JSON side file (`<index>.json`) with the gallery's metadata.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from igoas.retrieval.features_file import Features, load_features
from igoas.utils.errors import IgoasError
from igoas.utils.extras import optional
from igoas.utils.fileio import atomic_write, write_json

INDEX_FORMAT = "igoas-index"
INDEX_FORMAT_VERSION = 1

DEFAULT_OPTIONS: dict[str, dict[str, int]] = {
    "flat": {},
    # nlist 0 = chosen from the gallery size at build time; nprobe lists are visited per query
    "ivf": {"nlist": 0, "nprobe": 16},
    "hnsw": {"m": 32, "ef_construction": 200, "ef_search": 128},
}
# The smallest value FAISS takes for each option (it crashes, raises only at search time, or
# silently returns nothing below it); nlist is also at most the gallery size.
OPTION_MINIMUM = {"nlist": 0, "nprobe": 1, "m": 2, "ef_construction": 1, "ef_search": 1}
OPTION_MEANING = {"nlist": "0 chooses it from the gallery size", "nprobe": "lists visited per query",
                  "m": "links per node", "ef_construction": "build-time beam width",
                  "ef_search": "search-time beam width"}


def check_options(options: dict[str, int], count: int | None = None) -> None:
    """Refuse an option value FAISS cannot use, naming it and its allowed range, before
    FAISS sees it; with the gallery size `count`, nlist may not exceed it (each list
    needs at least one training point)."""
    for name, value in options.items():
        least = OPTION_MINIMUM[name]
        largest = count if name == "nlist" and count is not None else None
        if isinstance(value, bool) or not isinstance(value, int) or value < least or (largest and value > largest):
            allowed = f"{least}..{largest}, the gallery holds {count} embeddings" if largest else f"at least {least}"
            raise IgoasError(f"index option {name}={value!r} (--{name.replace('_', '-')}) is out of range "
                             f"(allowed: whole numbers, {allowed}); {name}: {OPTION_MEANING[name]}")


def _build_flat(dim: int, embeddings: np.ndarray, options: dict[str, int]) -> Any:
    faiss = optional("faiss", "FAISS search")

    return faiss.IndexFlatIP(dim)


def _build_ivf(dim: int, embeddings: np.ndarray, options: dict[str, int]) -> Any:
    faiss = optional("faiss", "FAISS search")

    count = len(embeddings)
    # FAISS wants about 39 training points per list; 4 * sqrt(N) lists is its usual rule of thumb
    nlist = options["nlist"] or max(1, min(int(4 * math.sqrt(count)), count // 39))
    options["nlist"] = nlist
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(embeddings)
    return index


def _build_hnsw(dim: int, embeddings: np.ndarray, options: dict[str, int]) -> Any:
    faiss = optional("faiss", "FAISS search")

    index = faiss.IndexHNSWFlat(dim, options["m"], faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = options["ef_construction"]
    return index


def _configure_nothing(index: Any, options: dict[str, int]) -> None:
    """An exact index has no search-time knobs."""


def _configure_ivf(index: Any, options: dict[str, int]) -> None:
    index.nprobe = min(options["nprobe"], index.nlist)


def _configure_hnsw(index: Any, options: dict[str, int]) -> None:
    index.hnsw.efSearch = options["ef_search"]


@dataclass(frozen=True)
class IndexKind:
    """How to build one kind of FAISS index, and how to set its search-time knobs (re-applied after loading)."""

    build: Callable[[int, np.ndarray, dict[str, int]], Any]
    configure: Callable[[Any, dict[str, int]], None]


INDEX_KINDS: dict[str, IndexKind] = {
    "flat": IndexKind(_build_flat, _configure_nothing),
    "ivf": IndexKind(_build_ivf, _configure_ivf),
    "hnsw": IndexKind(_build_hnsw, _configure_hnsw),
}


@dataclass
class SearchResult:
    """Top-K per query, best first; an index of -1 (score -inf) marks a slot with no gallery entry."""

    scores: np.ndarray  # Q x K float32 inner products
    indices: np.ndarray  # Q x K int64 gallery positions
    paths: list[list[str]]
    pids: np.ndarray  # Q x K, -1 where unknown
    camids: np.ndarray


class GalleryIndex:
    """Gallery embeddings in a FAISS index plus the path, identity and camera of every entry."""

    def __init__(
        self,
        index: Any,
        kind: str,
        options: dict[str, int],
        paths: list[str],
        pids: np.ndarray,
        camids: np.ndarray,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        faiss = optional("faiss", "FAISS search")

        if kind not in INDEX_KINDS:
            raise IgoasError(f"unknown index kind {kind!r}; choose one of {sorted(INDEX_KINDS)}")
        self.index = index
        self.kind = kind
        self.options = dict(options)
        self.paths = list(paths)
        self.pids = np.asarray(pids, dtype=np.int64)
        self.camids = np.asarray(camids, dtype=np.int64)
        self.metadata = dict(metadata or {})
        check_options(self.options)  # also for a side file edited by hand
        INDEX_KINDS[kind].configure(faiss.downcast_index(index), self.options)

    @classmethod
    def build(cls, features: Features | str | os.PathLike, kind: str = "flat", **options: int) -> "GalleryIndex":
        """Index a features file (or loaded `Features`); `options` override DEFAULT_OPTIONS[kind]."""
        if not isinstance(features, Features):
            features = load_features(features)
        if kind not in INDEX_KINDS:
            raise IgoasError(f"unknown index kind {kind!r}; choose one of {sorted(INDEX_KINDS)}")
        unknown = sorted(set(options) - set(DEFAULT_OPTIONS[kind]))
        if unknown:
            raise IgoasError(
                f"index kind {kind!r} has no option(s) {unknown}; it takes {sorted(DEFAULT_OPTIONS[kind])}"
            )
        if len(features) == 0:
            raise IgoasError("cannot build an index from an empty features file (no readable images?)")
        try:
            given = {key: int(value) for key, value in options.items()}
        except (TypeError, ValueError):
            raise IgoasError(f"index options take whole numbers, got {options}") from None
        settings = {**DEFAULT_OPTIONS[kind], **given}
        check_options(settings, count=len(features))
        embeddings = _unit_rows(features.embeddings)
        index = INDEX_KINDS[kind].build(embeddings.shape[1], embeddings, settings)
        index.add(embeddings)
        metadata = {"features": features.metadata}
        return cls(index, kind, settings, features.paths, features.pids, features.camids, metadata)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, topk: int = 10) -> SearchResult:
        """The `topk` most similar gallery entries of each query embedding (rows scaled to unit length)."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.dim:
            raise IgoasError(
                f"query embeddings have {queries.shape[1]} dimensions but the index holds {self.dim}; "
                "embed the queries with the checkpoint that produced the gallery"
            )
        if topk < 1:
            raise IgoasError(f"topk must be at least 1, got {topk}")
        if not np.isfinite(queries).all():
            raise IgoasError(f"{int((~np.isfinite(queries).all(axis=1)).sum())} query embedding(s) hold NaN or Inf; "
                             "the model that embedded them gives non-finite outputs: check its checkpoint")
        topk = min(topk, len(self))
        scores, indices = self.index.search(_unit_rows(queries), topk)
        valid = indices >= 0
        safe = np.where(valid, indices, 0)
        return SearchResult(
            scores=np.where(valid, scores, -np.inf).astype(np.float32),
            indices=indices.astype(np.int64),
            paths=[[self.paths[i] for i in row if i >= 0] for row in indices],
            pids=np.where(valid, self.pids[safe], -1),
            camids=np.where(valid, self.camids[safe], -1),
        )

    def reconstruct(self, indices: np.ndarray) -> np.ndarray:
        """The stored (unit-length) embeddings of gallery positions `indices`, as a len x D float32 array."""
        faiss = optional("faiss", "FAISS search")

        index = faiss.downcast_index(self.index)
        if isinstance(index, faiss.IndexIVF) and not index.direct_map.type:
            index.make_direct_map()  # inverted lists keep no position -> vector map until asked
        return np.stack([index.reconstruct(int(i)) for i in indices]) if len(indices) else np.empty((0, self.dim),
                                                                                                    np.float32)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the FAISS index to `path` and its metadata to `<path>.json`, each atomically."""
        faiss = optional("faiss", "FAISS search")

        path = Path(path)
        side = {
            "format": INDEX_FORMAT,
            "format_version": INDEX_FORMAT_VERSION,
            "kind": self.kind,
            "options": self.options,
            "count": len(self),
            "dim": self.dim,
            "paths": self.paths,
            "pids": self.pids.tolist(),
            "camids": self.camids.tolist(),
            "metadata": self.metadata,
        }
        data = faiss.serialize_index(self.index)
        atomic_write(path, lambda handle: handle.write(data.tobytes()))
        write_json(metadata_path(path), side, indent=None)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GalleryIndex":
        """Read an index written by `save`, checking that the index and its side file belong together."""
        faiss = optional("faiss", "FAISS search")

        path, side_path = Path(path), metadata_path(path)
        for required in (path, side_path):
            if not required.is_file():
                raise IgoasError(f"{required}: missing; an index is two files made by `igoas search build`")
        try:
            side = json.loads(side_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise IgoasError(f"{side_path}: unreadable index metadata ({err}); rebuild the index") from None
        if not isinstance(side, dict) or side.get("format") != INDEX_FORMAT:
            raise IgoasError(f"{side_path}: not an igoas index metadata file; rebuild with `igoas search build`")
        try:
            index = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
        except RuntimeError as err:
            reason = str(err).strip().splitlines()[0]
            raise IgoasError(f"{path}: not a readable FAISS index ({reason}); rebuild it") from None
        _check_side_file(side, side_path)
        if index.ntotal != side["count"] or index.d != side["dim"]:
            raise IgoasError(
                f"{path}: holds {index.ntotal} x {index.d} vectors but {side_path} describes "
                f"{side['count']} x {side['dim']}; the two files come from different builds, rebuild the index"
            )
        return cls(index, side["kind"], side["options"], side["paths"], side["pids"], side["camids"], side["metadata"])


SIDE_FIELDS = {"count": int, "dim": int, "kind": str, "options": dict, "paths": list, "pids": list, "camids": list,
               "metadata": dict}


def _check_side_file(side: dict[str, Any], side_path: Path) -> None:
    """Every field an index's side file needs, of its type, with one path, identity and
    camera per vector; a damaged or hand-edited one is named instead of raising KeyError."""
    wrong = [f"{key} ({kind.__name__})" for key, kind in SIDE_FIELDS.items() if not isinstance(side.get(key), kind)]
    if wrong:
        raise IgoasError(f"{side_path}: missing or malformed field(s) {', '.join(wrong)}; rebuild the index with "
                         "`igoas search build`")
    lengths = {key: len(side[key]) for key in ("paths", "pids", "camids")}
    if set(lengths.values()) != {side["count"]}:
        raise IgoasError(f"{side_path}: describes {side['count']} vectors but holds "
                         f"{', '.join(f'{n} {key}' for key, n in lengths.items())}; rebuild the index")


def metadata_path(index_path: str | os.PathLike) -> Path:
    """Where the JSON side file of an index lives."""
    index_path = Path(index_path)
    return index_path.with_name(index_path.name + ".json")


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), as a fresh contiguous float32 array."""
    matrix = np.array(matrix, dtype=np.float32, copy=True, order="C")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, np.finfo(np.float32).tiny)
