"""Embeddings of a folder of images or of a dataset split, written to a features file.

What `igoas extract` does, callable from Python. A folder is searched recursively; names
in the Market-1501 style (`0002_c1s1_000451_03.jpg`) give the identity and camera, any
other name gets -1 for both. A dataset split takes identities and cameras from the
dataset's own loader. Unreadable images are skipped and recorded in the file
(`bad_paths`), so one corrupt file never loses a long extraction; features that are
ranked at once (`query_and_gallery`, `checkpoint_cmc`) fail on them by default instead,
since a smaller gallery changes the metrics.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from igoas.artifacts.provenance import checkpoint_identity
from igoas.data import build_dataset, query_samples
from igoas.data.base import ReIDDataset, list_images, listing, protocol_title
from igoas.data.market1501 import MARKET_PATTERN
from igoas.deploy.inference import ReIDModel
from igoas.evaluation import evaluate_features
from igoas.imaging.images import IMAGE_EXTENSIONS
from igoas.retrieval.features_file import Features, save_features
from igoas.utils.errors import IgoasError

LOG = logging.getLogger(__name__)
ON_ERROR = ("fail", "skip")


@dataclass(frozen=True)
class ImageList:
    """The images to embed with what is known about each (identity and camera, -1 when unknown)."""

    paths: list[str]
    pids: list[int]
    camids: list[int]
    description: str


def folder_images(folder: str | os.PathLike) -> ImageList:
    """Every image under `folder` (recursively, sorted), with identity and camera parsed from Market-style names."""

    folder = Path(folder)
    if not folder.is_dir():
        raise IgoasError(f"{folder}: no such folder; pass a folder of images, or a dataset root with --dataset NAME")
    files = list_images(folder, recursive=True)
    if not files:
        raise IgoasError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found in it or below it")
    return _named_images([str(path) for path in files], f"folder {folder}")


def path_images(items: Sequence[str | os.PathLike]) -> ImageList:
    """Image files as given and folders expanded, identities and cameras parsed from Market-style names."""
    paths: list[str] = []
    for item in items:
        paths.extend(folder_images(item).paths if Path(item).is_dir() else [str(item)])
    return _named_images(paths, f"{len(paths)} image(s)")


def _named_images(paths: list[str], description: str) -> ImageList:
    parsed = [MARKET_PATTERN.parse(Path(path).name) for path in paths]
    return ImageList(
        paths=paths,
        pids=[p[0] if p else -1 for p in parsed],
        # Market names hold 1-based cameras; the project's cameras are 0-based
        camids=[p[1] - 1 if p and p[1] is not None else -1 for p in parsed],
        description=description,
    )


def sample_images(samples: Sequence[Any], description: str) -> ImageList:
    """Dataset samples (path, pid, camid) as an ImageList."""
    return ImageList(paths=[s.path for s in samples], pids=[s.pid for s in samples],
                     camids=[s.camid for s in samples], description=description)


def query_and_gallery(model: ReIDModel | str | os.PathLike, dataset: ReIDDataset, query_set: str = "query",
                      queries: Sequence[Any] | None = None, batch_size: int = 64,
                      num_workers: int = 0, on_error: str = "fail") -> tuple[Features, Features]:
    """Unit-length features of a dataset's query set (or of chosen `queries`) and of its
    gallery: what ranked lists, distance distributions and CMC curves of a checkpoint use.

    An image that cannot be read is an error naming it (`on_error="fail"`, as in
    evaluation): leaving it out would shrink the query set or the gallery and change every
    ranking and metric. `on_error="skip"` ranks without such images, with a warning.
    """

    if on_error not in ON_ERROR:
        raise IgoasError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    chosen = list(queries) if queries is not None else query_samples(dataset, query_set)
    if not isinstance(model, ReIDModel):
        model = ReIDModel.from_checkpoint(model)  # once for both sides

    def embedded(samples: Sequence[Any], description: str) -> Features:
        features = extract(model, sample_images(samples, description), batch_size=batch_size, num_workers=num_workers)
        return _all_read(features, description, on_error)

    return embedded(chosen, f"{len(chosen)} {query_set} images"), embedded(dataset.gallery, "gallery")


def _all_read(features: Features, description: str, on_error: str) -> Features:
    """`features` when every image was embedded; else an error naming the unreadable ones,
    or with `on_error="skip"` a warning that the ranking runs without them."""

    if not features.bad_paths:
        return features
    reasons = features.metadata.get("bad_reasons") or {}
    named = listing([reasons.get(path) or path for path in features.bad_paths])
    count = f"{len(features.bad_paths)} image(s) of the {description}"
    if on_error == "skip":
        LOG.warning("%s cannot be read and are left out, which changes the rankings and metrics:%s", count, named)
        return features
    raise IgoasError(f"{count} cannot be read; leaving them out would change the rankings and metrics:{named}\n"
                     "Repair or remove them (`igoas data check` lists every problem of a dataset copy), or "
                     "rank without them: on_error=\"skip\" (`--skip-unreadable` on the command line).")


def checkpoint_cmc(model: ReIDModel | str | os.PathLike, dataset: ReIDDataset, query_set: str = "query",
                   max_rank: int = 50, batch_size: int = 64, num_workers: int = 0,
                   on_error: str = "fail") -> np.ndarray:
    """The CMC curve (fractions, rank 1 first) of a checkpoint on one query set of `dataset`;
    unreadable images fail or are skipped as in `query_and_gallery`."""

    query, gallery = query_and_gallery(model, dataset, query_set, batch_size=batch_size, num_workers=num_workers,
                                       on_error=on_error)
    result = evaluate_features(query.embeddings, gallery.embeddings, query.pids, gallery.pids, query.camids,
                               gallery.camids, max_rank=max_rank)
    return np.asarray(result.cmc)


def dataset_images(name: str, root: str | os.PathLike, split: str = "query",
                   options: Mapping[str, object] | None = None) -> ImageList:
    """One split of a dataset: `train`, `query`, `gallery` or an extra query set (`query:NAME` or `NAME`).

    `options` go to the dataset's reader (e.g. {"split": "half"} for Occluded-ReID: a
    mapping, since that reader's `split` is not this one). The description names the
    protocol the reader used, which the features file keeps."""

    dataset = build_dataset(name, root, **dict(options or {}))
    splits = dataset.splits()
    samples = splits.get(split, splits.get(f"query:{split}"))
    if samples is None:
        raise IgoasError(f"dataset {name} at {root} has no split {split!r}; choose one of {sorted(splits)}")

    return sample_images(samples, f"{protocol_title(name, dataset.protocol_info)} {split} split at {root}")


def extract(
    model: ReIDModel | str | os.PathLike,
    images: ImageList,
    out: str | os.PathLike | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
) -> Features:
    """Embed `images` with `model` (a ReIDModel or a checkpoint path); write them to `out` if given."""

    if not isinstance(model, ReIDModel):
        model = ReIDModel.from_checkpoint(model)
    result = model.embed_files(images.paths, batch_size=batch_size, num_workers=num_workers, progress=progress)
    position = {path: index for index, path in enumerate(images.paths)}
    kept = [position[path] for path in result.paths]
    features = Features(
        embeddings=result.embeddings,
        paths=result.paths,
        pids=np.asarray(images.pids, dtype=np.int64)[kept],
        camids=np.asarray(images.camids, dtype=np.int64)[kept],
        bad_paths=result.bad_paths,
        metadata={
            # absolute, so `igoas search query` finds the model from any working directory
            "checkpoint": _absolute_if_file(model.source),
            "checkpoint_sha256": checkpoint_identity(model.source)["sha256"],
            "model_spec": model.spec,
            "preprocess": model.preprocess_config.to_dict(),
            "precision": model.precision,
            "backend": model.backend,
            "source": images.description,
            "bad_reasons": result.bad,
        },
    )
    if out is not None:
        save_features(out, features)
    return features


def _absolute_if_file(source: str | None) -> str | None:
    return str(Path(source).resolve()) if source and Path(source).is_file() else source
