"""The gallery a search page ranks: where its embeddings come from, and the ranking itself.

Three sources, by what `--gallery` names: a FAISS index from `igoas search build` (used as
it is), a features file from `igoas extract`, or images (a folder, or a dataset split)
that are embedded once and cached on disk, keyed by the checkpoint and the files, so a
restart with the same inputs skips the embedding. Every source ends up as a
`GalleryIndex`, so there is one search path; k-reciprocal re-ranking, when asked for,
re-orders a shortlist of the index's nearest entries.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from igoas.deploy.extraction import ImageList, dataset_images, extract, folder_images
from igoas.deploy.inference import ReIDModel
from igoas.evaluation.distance import distance_from_similarity
from igoas.evaluation.rerank import k_reciprocal_rerank
from igoas.retrieval import GalleryIndex, load_features, save_features
from igoas.retrieval.index import metadata_path
from igoas.utils.errors import IgoasError
from igoas.utils.fileio import file_identity, user_cache_dir

FEATURE_SUFFIXES = (".npz", ".safetensors")
# Entries re-ranked per query: k-reciprocal sets need k1 + 1 = 21 neighbours and their
# own neighbourhoods, so a few times that keeps the expansion inside the shortlist.
RERANK_SHORTLIST = 100
# Extra entries fetched beyond K so the protocol's exclusions (same identity and camera,
# junk identity -1) still leave K to show.
EXCLUSION_MARGIN = 50
# The distance the page shows: the evaluation's default, on the same scale as every other tool.
SERVE_METRIC = "euclidean"


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/igoas/deploy/serve` (or `~/.cache/igoas/deploy/serve`)."""
    return user_cache_dir("serve")


def is_index_file(path: str | os.PathLike) -> bool:
    """An index from `igoas search build` is a file with a `<name>.json` side file."""
    return Path(path).is_file() and metadata_path(path).is_file()


def gallery_images(source: str | os.PathLike, dataset: str | None = None, split: str = "gallery") -> ImageList:
    """The images of `source`: a folder, or with `dataset` one split of that dataset."""
    return dataset_images(dataset, source, split) if dataset else folder_images(source)


def load_gallery(
    model: ReIDModel,
    source: str | os.PathLike,
    dataset: str | None = None,
    split: str = "gallery",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> GalleryIndex:
    """A searchable gallery from an index file, a features file, or images embedded (and cached) now.

    Images are a folder, or with `dataset` that dataset's `split` with `source` as its root.
    """
    path = Path(source)
    if not path.exists():
        raise IgoasError(f"{path}: no such gallery; pass a FAISS index, a features file or a folder of images")
    if is_index_file(path):
        gallery = GalleryIndex.load(path)
    elif path.is_file() and path.suffix.lower() in FEATURE_SUFFIXES:
        gallery = GalleryIndex.build(load_features(path))
    elif path.is_file():
        raise IgoasError(
            f"{path}: not a gallery; pass an index from `igoas search build` (with its {path.name}.json), "
            f"a features file ({', '.join(FEATURE_SUFFIXES)}) or a folder of images"
        )
    else:
        gallery = GalleryIndex.build(_cached_features(model, gallery_images(path, dataset, split), cache_dir, progress))
    if gallery.dim != model.embedding_dim:
        raise IgoasError(
            f"{path}: the gallery holds {gallery.dim}-d embeddings but the model makes {model.embedding_dim}-d ones; "
            "serve it with the checkpoint that embedded it"
        )
    return gallery


def _cached_features(model: ReIDModel, images: ImageList, cache_dir: str | os.PathLike | None, progress: bool):
    """Embeddings of `images`, read from the cache when the same model already embedded the same files."""

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / f"{cache_key(model, images.paths)}.npz"
    if target.is_file():
        try:
            return load_features(target)
        except IgoasError:
            pass  # a damaged cache entry is rebuilt below
    print(f"[serve] embedding {len(images.paths)} gallery images of {images.description} (cached in {target})")
    features = extract(model, images, batch_size=64, progress=progress)
    for reason in features.metadata["bad_reasons"].values():
        print(f"[serve] skipped unreadable gallery image: {reason}")
    if len(features) == 0:
        raise IgoasError(f"{images.description}: none of its images could be read")
    try:
        save_features(target, features)
    except IgoasError as err:  # a read-only or full cache costs the next start's embedding, not this one
        print(f"[serve] warning: the gallery embeddings are not cached ({err}); serving them anyway, "
              "the next start embeds the gallery again (choose a writable folder with --cache)", file=sys.stderr)
    return features


def cache_key(model: ReIDModel, paths: Sequence[str]) -> str:
    """A digest of everything that decides the embeddings: the model file and settings, and each image file."""
    digest = hashlib.sha256()
    identity = {"source": _file_identity(model.source), "preprocess": model.preprocess_config.to_dict(),
                "precision": model.precision, "backend": model.backend, "spec": model.spec}
    digest.update(json.dumps(identity, sort_keys=True, default=str).encode())
    for path in paths:
        digest.update(json.dumps(_file_identity(path)).encode())
    return digest.hexdigest()[:32]


def _file_identity(path: str | None) -> list:
    """(absolute path, size, modification time), so an edited or replaced file changes the key."""

    if not path or not Path(path).is_file():
        return [path]
    return list(file_identity(path))


def shortlist_size(entries: int, topk: int, rerank: bool) -> int:
    """How many nearest entries a top-`topk` search fetches: a margin for the exclusions and,
    with re-ranking, at least RERANK_SHORTLIST (re-ranked distances depend on it)."""
    return min(entries, max(topk + EXCLUSION_MARGIN, RERANK_SHORTLIST if rerank else 0))


def earlier_ranks(gallery: GalleryIndex, query: np.ndarray, topk: int, depth: int, pid: int = -1, camid: int = -1,
                  rerank: bool = False) -> tuple[dict[int, int], int]:
    """{gallery position: rank} for the unoccluded query as a top-`topk` search would rank it,
    and how deep that list goes.

    Without re-ranking the list runs to `depth`. With it, the ranks come from re-ranking the
    very shortlist a top-`topk` search of this query re-ranks, so they are the ranks that
    search shows; re-ranking a longer list would give other distances, hence other ranks.
    """
    if rerank:
        depth = shortlist_size(len(gallery), topk, True)
        ranking = rank(gallery, query, depth, pid, camid, True, shortlist=depth)
        depth = len(ranking.indices)  # the shortlist less the protocol's exclusions
    else:
        ranking = rank(gallery, query, depth, pid, camid)
    return {int(index): place for place, index in enumerate(ranking.indices, start=1)}, depth


@dataclass
class Ranking:
    """The top-K of one query, best first: gallery positions, their distances and match flags."""

    indices: np.ndarray  # K int64 gallery positions
    distances: np.ndarray  # K float32: SERVE_METRIC's distance (squared Euclidean of unit embeddings), or re-ranked
    matches: list[bool | None]  # None where the query's identity is unknown


def rank(
    gallery: GalleryIndex,
    query: np.ndarray,
    topk: int,
    pid: int = -1,
    camid: int = -1,
    rerank: bool = False,
    shortlist: int | None = None,
) -> Ranking:
    """The `topk` gallery entries nearest to one unit-length query embedding.

    When the query's identity is known, the evaluation protocol's exclusions apply (gallery
    images of its identity from its camera, and junk identity -1, are skipped), so the page
    shows what the metrics score. `rerank` re-orders a shortlist by k-reciprocal re-ranking;
    `shortlist` sets how many nearest entries are fetched (default `shortlist_size`).
    """
    fetch = shortlist_size(len(gallery), topk, rerank) if shortlist is None else min(len(gallery), shortlist)
    result = gallery.search(query[None], topk=fetch)
    indices = result.indices[0][result.indices[0] >= 0]
    distances = distance_from_similarity(result.scores[0][: len(indices)], SERVE_METRIC)
    if rerank:
        distances = k_reciprocal_rerank(query[None], gallery.reconstruct(indices))[0]
        order = np.argsort(distances, kind="stable")
        indices, distances = indices[order], distances[order]
    if pid >= 0:
        g_pids, g_cams = gallery.pids[indices], gallery.camids[indices]
        keep = ~((g_pids == pid) & (g_cams == camid)) & (g_pids != -1)
        indices, distances = indices[keep], distances[keep]
    indices, distances = indices[:topk], distances[:topk]
    matches = [bool(gallery.pids[i] == pid) if pid >= 0 else None for i in indices]
    return Ranking(indices=indices, distances=distances, matches=matches)
