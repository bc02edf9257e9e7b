"""A FAISS gallery index over unit-length embeddings, with each entry's path, identity and camera.

Scores are inner products; on unit-length vectors that is cosine similarity and gives the
same ranking as the Euclidean distance the evaluation uses. `flat` is exact (the ranking
equals brute force); `ivf` and `hnsw` trade a little recall for speed on galleries of
hundreds of thousands of images, and `ivf_pq` (inverted lists of product-quantised codes,
optionally after an OPQ rotation) also shrinks the index to `pq_m` bytes a vector. An index
is saved as two files written atomically: the FAISS index itself and a JSON side file
(`<index>.json`) with the gallery's metadata.

A gallery is read as a stream of row blocks (`GalleryRows`: one features file in memory,
or the memory-mapped shards of a sharded extraction), so building holds the index, one
`add_chunk` of rows and the training sample, never the whole float gallery for the trained
kinds (ivf, ivf_pq). `target_recall` tunes nprobe / ef_search on held-out queries against
an exact search computed in the same streaming pass.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

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
    # pq_m 0 = D / 4 sub-quantisers (one byte, 8 bits, per 4 dimensions); opq 1 = learn a rotation first
    "ivf_pq": {"nlist": 0, "nprobe": 16, "pq_m": 0, "opq": 0},
    "hnsw": {"m": 32, "ef_construction": 200, "ef_search": 128},
}
# The smallest value FAISS takes for each option (it crashes, raises only at search time, or
# silently returns nothing below it); nlist is also at most the gallery size.
OPTION_MINIMUM = {"nlist": 0, "nprobe": 1, "m": 2, "ef_construction": 1, "ef_search": 1, "pq_m": 0, "opq": 0}
OPTION_MAXIMUM = {"opq": 1}
OPTION_MEANING = {"nlist": "0 chooses it from the gallery size", "nprobe": "lists visited per query",
                  "m": "links per node", "ef_construction": "build-time beam width",
                  "ef_search": "search-time beam width",
                  "pq_m": "sub-quantisers (bytes per vector), a divisor of the dimension; 0 = dimension / 4",
                  "opq": "1 learns an OPQ rotation before quantising"}
# The search-time knob that `target_recall` tunes, per kind.
TUNED_OPTION = {"ivf": "nprobe", "ivf_pq": "nprobe", "hnsw": "ef_search"}
TRAINED_KINDS = ("ivf", "ivf_pq")
PQ_BITS = 8  # 256 centroids per sub-quantiser: its training needs at least that many vectors
DEFAULT_ADD_CHUNK = 65536
DEFAULT_TUNE_QUERIES = 1000


def check_options(options: dict[str, int], count: int | None = None) -> None:
    """Refuse an option value FAISS cannot use, naming it and its allowed range, before
    FAISS sees it; with the gallery size `count`, nlist may not exceed it (each list
    needs at least one training point)."""
    for name, value in options.items():
        least = OPTION_MINIMUM[name]
        largest = count if name == "nlist" and count is not None else OPTION_MAXIMUM.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < least or (largest and value > largest):
            allowed = (f"{least}..{largest}, the gallery holds {count} embeddings" if largest and name == "nlist"
                       else f"{least}..{largest}" if largest else f"at least {least}")
            raise IgoasError(f"index option {name}={value!r} (--{name.replace('_', '-')}) is out of range "
                             f"(allowed: whole numbers, {allowed}); {name}: {OPTION_MEANING[name]}")


def default_nlist(count: int) -> int:
    """FAISS's rule of thumb, 4 * sqrt(N) lists, at most N / 39 (it wants about 39 training points a list)."""
    return max(1, min(int(4 * math.sqrt(count)), count // 39))


def default_train_size(count: int, nlist: int) -> int:
    """max(39 * nlist, 10000) training vectors, at most the gallery size."""
    return min(count, max(39 * nlist, 10000))


def _build_flat(dim: int, training: np.ndarray, options: dict[str, int]) -> Any:
    faiss = optional("faiss", "FAISS search")

    return faiss.IndexFlatIP(dim)


def _build_ivf(dim: int, training: np.ndarray, options: dict[str, int]) -> Any:
    faiss = optional("faiss", "FAISS search")

    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, options["nlist"], faiss.METRIC_INNER_PRODUCT)
    index.train(training)
    return index


def _build_ivf_pq(dim: int, training: np.ndarray, options: dict[str, int]) -> Any:
    faiss = optional("faiss", "FAISS search")

    pq_m, nlist = options["pq_m"], options["nlist"]
    rotation = f"OPQ{pq_m}," if options["opq"] else ""
    index = faiss.index_factory(dim, f"{rotation}IVF{nlist},PQ{pq_m}x{PQ_BITS}", faiss.METRIC_INNER_PRODUCT)
    # the factory turns on polysemous training (codes ordered for Hamming filtering, which the
    # search here never uses): seconds to minutes of work for nothing
    faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
    index.train(training)
    return index


def _build_hnsw(dim: int, training: np.ndarray, options: dict[str, int]) -> Any:
    faiss = optional("faiss", "FAISS search")

    index = faiss.IndexHNSWFlat(dim, options["m"], faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = options["ef_construction"]
    return index


def _configure_nothing(index: Any, options: dict[str, int]) -> None:
    """An exact index has no search-time knobs."""


def _configure_ivf(index: Any, options: dict[str, int]) -> None:
    faiss = optional("faiss", "FAISS search")

    ivf = faiss.extract_index_ivf(index)  # under an OPQ rotation for ivf_pq with opq
    ivf.nprobe = min(options["nprobe"], ivf.nlist)


def _configure_hnsw(index: Any, options: dict[str, int]) -> None:
    index.hnsw.efSearch = options["ef_search"]


@dataclass(frozen=True)
class IndexKind:
    """How to build one kind of FAISS index (from the dimension, the training sample, empty
    for untrained kinds, and the options), and how to set its search-time knobs (re-applied
    after loading)."""

    build: Callable[[int, np.ndarray, dict[str, int]], Any]
    configure: Callable[[Any, dict[str, int]], None]


INDEX_KINDS: dict[str, IndexKind] = {
    "flat": IndexKind(_build_flat, _configure_nothing),
    "ivf": IndexKind(_build_ivf, _configure_ivf),
    "ivf_pq": IndexKind(_build_ivf_pq, _configure_ivf),
    "hnsw": IndexKind(_build_hnsw, _configure_hnsw),
}


@dataclass
class GalleryRows:
    """A gallery as metadata plus a stream of row blocks: what `GalleryIndex.build` reads.

    `blocks()` yields consecutive N_i x D float32 arrays (in memory or memory-mapped) whose
    rows are the gallery in order; it is called twice (once for the training sample and the
    tuning queries, once to add the rows), and only one block is needed at a time.
    `source` names the file or folder in messages.
    """

    paths: list[str]
    pids: np.ndarray
    camids: np.ndarray
    dim: int
    blocks: Callable[[], Iterable[np.ndarray]]
    metadata: dict[str, Any]
    source: str = "the gallery"

    def __len__(self) -> int:
        return len(self.paths)

    @classmethod
    def from_features(cls, features: Features, source: str = "the features file") -> GalleryRows:
        embeddings = features.embeddings
        dim = int(embeddings.shape[1]) if embeddings.ndim == 2 else 0
        return cls(features.paths, np.asarray(features.pids), np.asarray(features.camids), dim,
                   lambda: [embeddings], {"features": features.metadata}, source)


def _rows(blocks: Iterable[np.ndarray], size: int, dim: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, unit-length rows) in chunks of exactly `size` rows (the last shorter),
    whatever the blocks' boundaries, so the index added to is the same for any shard size.
    The rows are copied into one reused `size` x D buffer (valid until the next chunk), so a
    memory-mapped block is released as soon as it has been copied."""
    buffer = np.empty((size, dim), np.float32)
    held, start = 0, 0
    for block in blocks:
        if block.ndim != 2 or block.shape[1] != dim:
            raise IgoasError(f"rows from {start + held} have shape {block.shape[1:]}, the gallery is {dim}-d; "
                             "re-extract it")
        offset = 0
        while offset < len(block):
            piece = block[offset:offset + size - held]
            buffer[held:held + len(piece)] = piece
            held += len(piece)
            offset += len(piece)
            if held == size:
                yield start, _unit_in_place(buffer)
                start, held = start + size, 0
        del block
    if held:
        yield start, _unit_in_place(buffer[:held])


def _unit_in_place(rows: np.ndarray) -> np.ndarray:
    """`rows` scaled to unit length in place (a zero row stays zero)."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    rows /= np.maximum(norms, np.finfo(np.float32).tiny)
    return rows


def _chunks_of(rows: GalleryRows, size: int, dim: int) -> Iterator[tuple[int, np.ndarray]]:
    """`_rows` of a gallery, its errors naming the gallery's file or folder."""
    try:
        yield from _rows(rows.blocks(), size, dim)
    except IgoasError as err:
        raise IgoasError(f"{rows.source}: {err}") from None


def _gather(blocks: Iterable[np.ndarray], wanted: list[np.ndarray], dim: int) -> list[np.ndarray]:
    """The rows at each sorted index array of `wanted`, as unit-length float32 arrays, in one
    pass over the blocks (each block read only where a wanted row lies)."""
    out = [np.empty((len(rows), dim), np.float32) for rows in wanted]
    start = 0
    for block in blocks:
        stop = start + len(block)
        for rows, target in zip(wanted, out):
            low, high = np.searchsorted(rows, [start, stop])
            if high > low:
                target[low:high] = block[rows[low:high] - start]
        start = stop
    return [_unit_in_place(rows) for rows in out]


class _ExactTopK:
    """The exact (flat inner product) top k of fixed queries, updated one chunk of gallery rows at a time."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries, self.k = queries, k
        self.scores = np.full((len(queries), 0), -np.inf, np.float32)
        self.indices = np.zeros((len(queries), 0), np.int64)

    def add(self, start: int, rows: np.ndarray) -> None:
        faiss = optional("faiss", "FAISS search")

        scores, indices = faiss.knn(self.queries, rows, min(self.k, len(rows)), metric=faiss.METRIC_INNER_PRODUCT)
        scores = np.concatenate([self.scores, scores], axis=1)
        indices = np.concatenate([self.indices, indices + start], axis=1)
        order = _top(scores, indices, self.k)
        self.scores = np.take_along_axis(scores, order, axis=1)
        self.indices = np.take_along_axis(indices, order, axis=1)


def _top(scores: np.ndarray, indices: np.ndarray, k: int) -> np.ndarray:
    """Per row, the positions of the k highest scores, ties by lower gallery index."""
    order = np.argsort(indices, axis=1, kind="stable")
    ranked = np.argsort(-np.take_along_axis(scores, order, axis=1), axis=1, kind="stable")
    return np.take_along_axis(order, ranked, axis=1)[:, :k]


def _recall(found: np.ndarray, truth: np.ndarray, own: np.ndarray | None, k: int) -> float:
    """Mean |found ∩ truth| / k over the queries, each query's own gallery entry (held-out
    gallery rows used as queries) dropped from both lists first."""
    total = 0.0
    for row in range(len(truth)):
        mine = -2 if own is None else own[row]
        true = [i for i in truth[row] if i != mine][:k]
        got = [i for i in found[row] if i != mine and i >= 0][:k]
        total += len(set(true) & set(got)) / max(len(true), 1)
    return total / max(len(truth), 1)


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
        build_info: dict[str, Any] | None = None,
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
        self.build_info = dict(build_info or {})  # training sample size, add chunk, seed, target-recall tuning
        check_options(self.options)  # also for a side file edited by hand
        INDEX_KINDS[kind].configure(faiss.downcast_index(index), self.options)

    @classmethod
    def build(
        cls,
        features: Features | GalleryRows | str | os.PathLike,
        kind: str = "flat",
        *,
        train_size: int | None = None,
        add_chunk: int = DEFAULT_ADD_CHUNK,
        seed: int = 0,
        target_recall: float | None = None,
        tune_queries: np.ndarray | None = None,
        tune_k: int = 10,
        **options: int,
    ) -> "GalleryIndex":
        """Index a features file, loaded `Features` or `GalleryRows`; `options` override DEFAULT_OPTIONS[kind].

        Trained kinds (ivf, ivf_pq) train on `train_size` rows drawn with `seed` (default
        `default_train_size`), then every kind adds the rows `add_chunk` at a time, read from
        the blocks. `target_recall` picks the smallest nprobe (ivf, ivf_pq) or ef_search (hnsw)
        whose recall@`tune_k` against an exact search reaches it, on `tune_queries` (Q x D) or
        on DEFAULT_TUNE_QUERIES gallery rows drawn with `seed`, each leaving its own entry out.
        """
        if isinstance(features, GalleryRows):
            rows = features
        elif isinstance(features, Features):
            rows = GalleryRows.from_features(features)
        else:
            rows = GalleryRows.from_features(load_features(features), str(features))
        if kind not in INDEX_KINDS:
            raise IgoasError(f"unknown index kind {kind!r}; choose one of {sorted(INDEX_KINDS)}")
        unknown = sorted(set(options) - set(DEFAULT_OPTIONS[kind]))
        if unknown:
            raise IgoasError(
                f"index kind {kind!r} has no option(s) {unknown}; it takes {sorted(DEFAULT_OPTIONS[kind])}"
            )
        if len(rows) == 0:
            raise IgoasError(f"cannot build an index from an empty features file (no readable images?): {rows.source}")
        try:
            given = {key: int(value) for key, value in options.items()}
        except (TypeError, ValueError):
            raise IgoasError(f"index options take whole numbers, got {options}") from None
        settings = {**DEFAULT_OPTIONS[kind], **given}
        check_options(settings, count=len(rows))
        count, dim = len(rows), rows.dim
        train_size = _plan_training(kind, settings, count, dim, train_size, rows.source)
        if isinstance(add_chunk, bool) or not isinstance(add_chunk, int) or add_chunk < 1:
            raise IgoasError(f"add_chunk (--add-chunk) must be a whole number of at least 1, got {add_chunk!r}")
        tuning = _plan_tuning(kind, given, count, dim, target_recall, tune_queries, tune_k, rows.source)

        rng = np.random.default_rng(seed)
        wanted = []
        if train_size:
            wanted.append(np.sort(rng.choice(count, train_size, replace=False)) if train_size < count
                          else np.arange(count))
        own = None
        if tuning is not None and tune_queries is None:
            own = np.sort(rng.choice(count, min(DEFAULT_TUNE_QUERIES, count), replace=False))
            wanted.append(own)
        gathered = _gather(rows.blocks(), wanted, dim) if wanted else []
        training = gathered[0] if train_size else np.empty((0, dim), np.float32)
        queries = None if tuning is None else (gathered[-1] if own is not None else _unit_rows(tune_queries))
        del gathered, wanted

        index = INDEX_KINDS[kind].build(dim, training, settings)
        del training
        truth = None if queries is None else _ExactTopK(queries, tune_k + (own is not None))
        # FAISS encodes PQ codes of sub-vectors of 16+ dimensions through a rows x pq_m x 256 float table: add
        # in pieces whose table is at most the chunk's own size
        step = add_chunk if kind != "ivf_pq" else max(1, add_chunk * dim // (settings["pq_m"] * 2 ** PQ_BITS))
        for start, chunk in _chunks_of(rows, add_chunk, dim):
            if not np.isfinite(chunk).all():
                bad = start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
                raise IgoasError(f"{rows.source}: embedding {bad} ({rows.paths[bad]}) holds NaN or Inf; the model "
                                 "that embedded it gives non-finite outputs: check its checkpoint and re-extract")
            for offset in range(0, len(chunk), step):
                index.add(chunk[offset:offset + step])
            if truth is not None:
                truth.add(start, chunk)
        if index.ntotal != count:
            raise IgoasError(f"{rows.source}: holds {index.ntotal} embeddings but {count} paths; re-extract it")
        build_info: dict[str, Any] = {"seed": seed, "add_chunk": add_chunk}
        if train_size:
            build_info["train_size"] = train_size
        built = cls(index, kind, settings, rows.paths, rows.pids, rows.camids, rows.metadata, build_info)
        if truth is not None:
            built.build_info["tuning"] = built._tune(queries, truth.indices, own, tune_k, float(target_recall))
        return built

    def _tune(self, queries: np.ndarray, truth: np.ndarray, own: np.ndarray | None, k: int,
              target: float) -> dict[str, Any]:
        """Set the smallest value of the kind's search knob whose recall@k reaches `target`
        (doubling, then bisecting: recall grows with nprobe and ef_search), and describe it."""
        faiss = optional("faiss", "FAISS search")

        name = TUNED_OPTION[self.kind]
        cap = self.options["nlist"] if name == "nprobe" else max(len(self), k)
        measured: dict[int, float] = {}

        def recall(value: int) -> float:
            if value not in measured:
                self.options[name] = value
                INDEX_KINDS[self.kind].configure(faiss.downcast_index(self.index), self.options)
                _, found = self.index.search(queries, k + (own is not None))
                measured[value] = _recall(found, truth, own, k)
            return measured[value]

        low, high = 0, 1
        while recall(high) < target:
            if high >= cap:
                best = max(measured.values())
                hint = ("more sub-quantisers (--pq-m), --opq or --kind ivf" if self.kind == "ivf_pq"
                        else "a larger --m or --ef-construction")
                raise IgoasError(f"target recall {target} is out of reach: {self.kind} measures at most recall@{k} "
                                 f"{best:.4f} ({name}={cap}); ask for less, or build with {hint}")
            low, high = high, min(2 * high, cap)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if recall(middle) >= target else (middle, high)
        self.options[name] = high
        INDEX_KINDS[self.kind].configure(faiss.downcast_index(self.index), self.options)
        return {"target_recall": target, "option": name, "value": high, "recall": measured[high], "k": k,
                "queries": len(queries), "queries_from": "gallery sample (own entry left out)" if own is not None
                else "given", "measured": {str(value): measured[value] for value in sorted(measured)}}

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
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and not ivf.direct_map.type:
            ivf.make_direct_map()  # inverted lists keep no position -> vector map until asked
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
            "build": self.build_info,
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
        return cls(index, side["kind"], side["options"], side["paths"], side["pids"], side["camids"], side["metadata"],
                   side.get("build") if isinstance(side.get("build"), dict) else None)


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


def _plan_training(kind: str, settings: dict[str, int], count: int, dim: int, train_size: int | None,
                   source: str) -> int:
    """Fill in nlist and pq_m, and return the training sample size (0 for untrained kinds), refusing what cannot work."""
    if "pq_m" in settings:
        if not settings["pq_m"]:
            settings["pq_m"] = max(m for m in range(1, max(dim // 4, 1) + 1) if dim % m == 0)
        if dim % settings["pq_m"]:
            divisors = [m for m in range(1, dim + 1) if dim % m == 0]
            raise IgoasError(f"{source}: --pq-m {settings['pq_m']} does not divide the embedding dimension {dim}; "
                             f"product quantisation cuts each vector into pq-m equal pieces: choose one of "
                             f"{divisors} (or leave it out for {dim} / 4)")
    if kind not in TRAINED_KINDS:
        if train_size is not None:
            raise IgoasError(f"train_size (--train-size) applies to the trained kinds {list(TRAINED_KINDS)}, not "
                             f"{kind!r}, which holds the vectors themselves; leave it out")
        return 0
    settings["nlist"] = settings["nlist"] or default_nlist(count)
    least = max(settings["nlist"], 2 ** PQ_BITS if kind == "ivf_pq" else 1)
    if train_size is None:
        train_size = default_train_size(count, settings["nlist"])
    if isinstance(train_size, bool) or not isinstance(train_size, int) or train_size > count:
        raise IgoasError(f"{source}: --train-size {train_size!r} is larger than the gallery ({count} embeddings) "
                         f"or not a whole number; give at most {count}, or leave it out for "
                         f"{default_train_size(count, settings['nlist'])}")
    if train_size < least:
        why = (f"{2 ** PQ_BITS} centroids per {PQ_BITS}-bit sub-quantiser" if least > settings["nlist"]
               else f"one per list, nlist={settings['nlist']}")
        raise IgoasError(f"{source}: --train-size {train_size} is too small for {kind}: it needs at least {least} "
                         f"training vectors ({why})" + ("" if least <= count else
                                                        f", and the gallery holds only {count}: use --kind ivf or "
                                                        "flat for a gallery this small"))
    return train_size


def _plan_tuning(kind: str, given: dict[str, int], count: int, dim: int, target: float | None,
                 queries: np.ndarray | None, k: int, source: str) -> float | None:
    """None without a target recall; else the target, after refusing what cannot be tuned."""
    if target is None:
        if queries is not None:
            raise IgoasError("tune_queries (--tune-queries) are only used with target_recall (--target-recall)")
        return None
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise IgoasError(f"target recall (--target-recall) must be a fraction in (0, 1], such as 0.95, got {target!r}")
    if kind not in TUNED_OPTION:
        raise IgoasError(f"--target-recall tunes {sorted(TUNED_OPTION)} indexes; {kind!r} is exact (recall 1)")
    name = TUNED_OPTION[kind]
    if name in given:
        raise IgoasError(f"--target-recall chooses {name} (--{name.replace('_', '-')}); give one of the two, not both")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise IgoasError(f"tune_k (--tune-k) must be a whole number of at least 1, got {k!r}")
    if queries is not None:
        queries = np.asarray(queries)
        if queries.ndim != 2 or queries.shape[1] != dim or not len(queries):
            raise IgoasError(f"tuning queries (--tune-queries) hold shape {queries.shape}, the gallery ({source}) "
                             f"is {dim}-d; embed them with the gallery's checkpoint")
        least = k
    else:
        least = k + 1  # each query's own entry is left out
    if count < least:
        raise IgoasError(f"{source}: recall@{k} needs at least {least} gallery embeddings, it holds {count}; "
                         "lower --tune-k")
    return float(target)


def metadata_path(index_path: str | os.PathLike) -> Path:
    """Where the JSON side file of an index lives."""
    index_path = Path(index_path)
    return index_path.with_name(index_path.name + ".json")


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), as a fresh contiguous float32 array."""
    matrix = np.array(matrix, dtype=np.float32, copy=True, order="C")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, np.finfo(np.float32).tiny)
