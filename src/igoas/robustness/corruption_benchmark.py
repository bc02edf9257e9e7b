"""The corruption benchmark: retrieval of any checkpoint under 20 corruptions x 5 severities.

Settings, after Chen et al. (NeurIPS 2021 Datasets and Benchmarks, MinghuiChen43/CIL-ReID):

- `query`: every query corrupted by one (corruption, severity), the gallery clean;
- `both`: query and gallery corrupted by the same (corruption, severity);
- `random`: every query and gallery image under its own corruption and severity, drawn
  uniformly from the chosen corruptions x severities (the benchmark's "Corruption Eval."
  numbers with all 20 x 5).

Summary figures per checkpoint and grid setting: the mean of R1/mAP/mINP over every
(corruption, severity) and the worst case (the lowest mAP). All images of one checkpoint
go through one DataLoader, so the workers corrupt without pause; its batches never mix
two (corruption, severity) groups, and each group is scored as soon as it is embedded.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Container, Iterator, Mapping, Sequence

import numpy as np
import torch

from igoas.artifacts.checkpoint import model_from_checkpoint
from igoas.artifacts.provenance import checkpoint_identity, software_versions
from igoas.compute.runtime import Runtime
from igoas.corruptions.apply import CORRUPTIONS, SEVERITIES, check_corruptions
from igoas.corruptions.images import CLEAN, RANDOM, CorruptedImages, Job, check_image_sizes
from igoas.corruptions.library import imagecorruptions
from igoas.data import query_samples
from igoas.data.base import ReIDDataset
from igoas.evaluation import evaluate_features
from igoas.evaluation.embedding import embed
from igoas.imaging.preprocess import Preprocess, PreprocessSource
from igoas.retrieval.features_file import Features
from igoas.robustness.corruption_records import ConditionKey, CorruptionRecord, FinishedConditions
from igoas.robustness.occlusion_stress import labelled_checkpoints
from igoas.utils.errors import ConfigError
from igoas.utils.progress import track

if TYPE_CHECKING:
    from igoas.compute.runtime import Runtime

SETTINGS = ("query", "both", "random")
GRID_SETTINGS = ("query", "both")
METRICS = ("R1", "mAP", "mINP")


@dataclass
class CorruptionBenchmarkResult:
    """Every record of a corruption benchmark, its summary figures and the settings that produced them."""

    records: list[CorruptionRecord]
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, Any]]:
        """{checkpoint: summary_of(its records)}."""
        checkpoints = dict.fromkeys(record.checkpoint for record in self.records)
        return {name: summary_of([r for r in self.records if r.checkpoint == name]) for name in checkpoints}

    def to_dict(self) -> dict[str, Any]:
        return {"settings": dict(self.settings), "summary": self.summary(),
                "results": [asdict(record) for record in self.records]}


def summary_of(records: Sequence[CorruptionRecord]) -> dict[str, Any]:
    """Clean metrics, and per setting: grid mean and worst case (lowest mAP), or the random setting's metrics."""
    summary: dict[str, Any] = {}
    for record in records:
        if record.setting in (CLEAN, RANDOM):
            summary[record.setting] = {metric: getattr(record, metric) for metric in METRICS}
    for setting in GRID_SETTINGS:
        grid = [r for r in records if r.setting == setting]
        if not grid:
            continue
        worst = min(grid, key=lambda r: r.mAP)
        summary[setting] = {
            "mean": {metric: float(np.mean([getattr(r, metric) for r in grid])) for metric in METRICS},
            "worst": {"corruption": worst.corruption, "severity": worst.severity,
                      **{metric: getattr(worst, metric) for metric in METRICS}},
            "num_conditions": len(grid),
        }
    return summary


def mean_corrupted_map(summary: Mapping[str, Any]) -> float:
    """The benchmark's headline figure from `summary_of`: mean mAP over the grid (`query`, else `both`,
    else the random setting's mAP)."""
    for setting in GRID_SETTINGS:
        if setting in summary:
            return float(summary[setting]["mean"]["mAP"])
    if RANDOM in summary:
        return float(summary[RANDOM]["mAP"])
    raise ConfigError("the summary holds no corrupted setting")


def corruption_benchmark(
    checkpoints: Sequence[Any] | Mapping[str, Any],
    dataset: ReIDDataset,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = SEVERITIES,
    settings: Sequence[str] = SETTINGS,
    finished: str | Path | None = None,
    **options: Any,
) -> CorruptionBenchmarkResult:
    """Evaluate each checkpoint of `checkpoints` (paths, payloads or {label: checkpoint}) on
    `dataset` under every corruption x severity of each setting, plus the clean reference.

    `options` are those of `evaluate_corruptions` (seed, query_set, metric, batch_size,
    num_workers, runtime, flip, cache_dir, progress, log). `cache_dir` keeps
    corrupted images between runs and checkpoints (per corruption, severity and seed).
    `finished` (a `records.FINISHED_NAME` file) gets every condition as it is scored, and
    the conditions it already holds for a checkpoint file of the same content, dataset and
    settings are not run again.
    """

    check_settings(corruptions, severities, settings)
    labelled = labelled_checkpoints(checkpoints)

    root = getattr(dataset, "root", None)
    records: list[CorruptionRecord] = []
    for label, checkpoint in labelled.items():
        model, payload = model_from_checkpoint(checkpoint)
        sha256 = checkpoint_identity(checkpoint)["sha256"]
        resume = {} if finished is None or sha256 is None else {   # an in-memory payload has no identity
            "finished": FinishedConditions(finished),
            "identity": {"checkpoint_sha256": sha256, "dataset": getattr(dataset, "name", None),
                         "root": str(root) if root is not None else None, "imagecorruptions": _library_version(),
                         **{key: options.get(key, default) for key, default in
                            (("query_set", "query"), ("seed", 0), ("metric", "euclidean"), ("flip", False))},
                         "precision": getattr(options.get("runtime"), "precision", "fp32")}}
        records += evaluate_corruptions(model, dataset, Preprocess.resolve(payload, label),
                                        corruptions, severities, settings, label=label, **resume, **options)
    return CorruptionBenchmarkResult(records, {
        "dataset": getattr(dataset, "name", None), "root": str(root) if root is not None else None,
        "query_set": options.get("query_set", "query"), "corruptions": list(corruptions),
        "severities": [int(s) for s in severities], "settings": list(settings), "seed": options.get("seed", 0),
        "metric": options.get("metric", "euclidean"), "flip": options.get("flip", False),
        "precision": getattr(options.get("runtime"), "precision", "fp32"),
        "checkpoints": {label: checkpoint_identity(checkpoint) for label, checkpoint in labelled.items()},
        "versions": {**software_versions(), "imagecorruptions": _library_version()}})


def _library_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imagecorruptions")
    except PackageNotFoundError:
        return None


def corruption_summary(model: torch.nn.Module | str | os.PathLike[str] | Mapping[str, Any], dataset: ReIDDataset,
                       preprocess: PreprocessSource | None = None, corruptions: Sequence[str] = CORRUPTIONS,
                       severities: Sequence[int] = SEVERITIES, settings: Sequence[str] = ("query",),
                       **options: Any) -> dict[str, Any]:
    """`summary_of` one model: a loaded network with its `Preprocess`, or a checkpoint (path or
    payload, whose own preprocessing is used). Its "mean corrupted mAP" is
    `mean_corrupted_map(summary)`; `options` are those of `evaluate_corruptions`."""

    source = model
    if not isinstance(model, torch.nn.Module):
        model, source = model_from_checkpoint(model)
    elif preprocess is None and getattr(model, "preprocess_config", None) is None:
        raise ConfigError(f"corruption_summary: a loaded network ({type(model).__name__}) needs its input "
                          "preprocessing: pass preprocess=Preprocess(...) (e.g. Preprocess.resolve(payload)), "
                          "or pass the checkpoint (path or payload) instead of the network")
    preprocess = Preprocess.resolve(preprocess if preprocess is not None else source)
    return summary_of(evaluate_corruptions(model, dataset, preprocess, corruptions, severities, settings, **options))


def evaluate_corruptions(
    model: torch.nn.Module,
    dataset: ReIDDataset,
    preprocess: PreprocessSource,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = SEVERITIES,
    settings: Sequence[str] = SETTINGS,
    *,
    label: str = "model",
    seed: int = 0,
    query_set: str = "query",
    metric: str = "euclidean",
    batch_size: int = 64,
    num_workers: int = 0,
    runtime: Runtime | None = None,
    flip: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    finished: FinishedConditions | None = None,
    identity: Mapping[str, Any] | None = None,
) -> list[CorruptionRecord]:
    """The records of one loaded model (with its `Preprocess`); `summary_of` turns them into the summary.

    `runtime` is where the network runs (default: CPU, fp32); `num_workers` processes corrupt in parallel; `cache_dir` keeps corrupted images (per
    corruption, severity and seed); `progress` shows a bar with the remaining time.
    `finished` records each condition as it is scored under `identity` (what produced it),
    and those it already holds for this label and identity are taken from it, not run.
    """

    corruptions, severities, settings = list(corruptions), [int(s) for s in severities], list(settings)
    check_settings(corruptions, severities, settings)
    imagecorruptions()  # a missing extra is reported here, not from inside a loader worker
    samples = {"query": query_samples(dataset, query_set), "gallery": list(dataset.gallery)}
    check_image_sizes(samples["query"] + (samples["gallery"] if set(settings) - {"query"} else []))
    if finished is not None and identity is None:
        raise ConfigError("evaluate_corruptions: `finished` needs the `identity` its records are made under")
    done = finished.load(label, identity) if finished is not None else {}
    groups = _groups(corruptions, severities, settings, {split: len(items) for split, items in samples.items()},
                     done)
    images = CorruptedImages(samples, [job for jobs in groups.values() for job in jobs], preprocess, seed, cache_dir,
                             corruptions, severities)
    with _opencv_pool_paused(num_workers):
        loader = torch.utils.data.DataLoader(images, batch_sampler=_GroupBatches([len(j) for j in groups.values()],
                                                                                 batch_size),
                                             num_workers=num_workers, worker_init_fn=_single_threaded_worker)
        runtime = runtime or Runtime()
        batches = _counted(loader, len(images), label, progress)
        remaining = iter(groups.items())

        def embed_group(expected: GroupKey) -> Any:
            key, jobs = next(remaining)
            assert key == expected, (key, expected)  # _groups and the scoring below walk the same order
            return embed(model, _take(batches, len(jobs), batch_size), runtime=runtime, flip=flip)

        records: dict[ConditionKey, CorruptionRecord] = dict(done)
        if done and log is not None:
            log(f"{label}  {len(done)} condition(s) already scored in {finished.path}: not run again")

        def score(setting: str, corruption: str, severity: int, query: Features, gallery: Features) -> None:
            if (setting, corruption, severity) in done:
                return
            scores = evaluate_features(query.embeddings, gallery.embeddings, query.pids, gallery.pids, query.camids,
                                       gallery.camids, metric=metric).to_dict()
            record = CorruptionRecord(label, setting, corruption, severity, num_queries=len(query),
                                      **{m: float(scores[m]) for m in METRICS})
            records[record.condition] = record
            if finished is not None:
                finished.add(record, identity)
            if log is not None:
                log(f"{label}  {setting:<6} {corruption:<18} s{severity}  R1 {scores['R1']:5.1f}  mAP {scores['mAP']:5.1f}")

        clean_gallery = None
        for key in list(groups):
            split, corruption, severity = key
            if split == "gallery":
                continue  # embedded with its query group below
            query = embed_group(key)
            if corruption == CLEAN:
                clean_gallery = embed_group(("gallery", CLEAN, 0))
                score(CLEAN, CLEAN, 0, query, clean_gallery)
            elif corruption == RANDOM:
                score(RANDOM, RANDOM, 0, query, embed_group(("gallery", RANDOM, 0)))
            else:
                if "query" in settings:
                    score("query", corruption, severity, query, clean_gallery)
                if ("gallery", corruption, severity) in groups:
                    score("both", corruption, severity, query, embed_group(("gallery", corruption, severity)))
        return [records[condition] for condition in conditions(corruptions, severities, settings)]


def conditions(corruptions: Sequence[str], severities: Sequence[int], settings: Sequence[str]) -> list[ConditionKey]:
    """Every (setting, corruption, severity) a benchmark scores, in the order of its records."""
    grid = [(setting, corruption, severity) for corruption in corruptions for severity in severities
            for setting in GRID_SETTINGS if setting in settings]
    return [(CLEAN, CLEAN, 0), *grid, *([(RANDOM, RANDOM, 0)] if RANDOM in settings else [])]


def check_settings(corruptions: Sequence[str], severities: Sequence[int], settings: Sequence[str]) -> None:
    """ConfigError naming the first unknown corruption, severity or setting, before any model runs."""
    check_corruptions(corruptions, severities)
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown or not settings:
        raise ConfigError(f"unknown corruption setting(s) {unknown or list(settings)}; choose from "
                          f"{', '.join(SETTINGS)}")


# ----------------------------------------------------------------------------- which images, in which order
GroupKey = tuple[str, str, int]  # (split, corruption, severity)


def _groups(corruptions: Sequence[str], severities: Sequence[int], settings: Sequence[str],
            sizes: Mapping[str, int], done: Container[ConditionKey] = ()) -> dict[GroupKey, list[Job]]:
    """Every group of images to embed once, in embedding order: clean (always: the grid's
    clean gallery), then the grid, then random; without the groups only `done` conditions need."""
    keys: list[GroupKey] = [("query", CLEAN, 0), ("gallery", CLEAN, 0)]
    for corruption in corruptions:
        for severity in severities:
            pending = [s for s in GRID_SETTINGS if s in settings and (s, corruption, severity) not in done]
            if pending:
                keys.append(("query", corruption, severity))
            if "both" in pending:
                keys.append(("gallery", corruption, severity))
    if RANDOM in settings and (RANDOM, RANDOM, 0) not in done:
        keys += [("query", RANDOM, 0), ("gallery", RANDOM, 0)]
    return {key: [Job(key[0], index, key[1], key[2]) for index in range(sizes[key[0]])] for key in keys}


# ----------------------------------------------------------------------------- loading
class _GroupBatches:
    """Batches of consecutive indices that never cross the boundary between two groups."""

    def __init__(self, group_sizes: Sequence[int], batch_size: int) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        self.group_sizes, self.batch_size = list(group_sizes), batch_size

    def __iter__(self) -> Iterator[list[int]]:
        start = 0
        for size in self.group_sizes:
            for offset in range(0, size, self.batch_size):
                yield list(range(start + offset, start + min(offset + self.batch_size, size)))
            start += size

    def __len__(self) -> int:
        return sum(-(-size // self.batch_size) for size in self.group_sizes)


def _take(batches: Iterator[dict[str, Any]], count: int, batch_size: int) -> Iterator[dict[str, Any]]:
    """The next `count` images' batches (a group's, as `_GroupBatches` cut them)."""
    for _ in range(-(-count // batch_size)):
        yield next(batches)


def _counted(loader: Any, total: int, label: str, progress: bool) -> Iterator[dict[str, Any]]:
    """The loader's batches, counting their images towards `total` with the time left (a bar
    on a terminal, timestamped lines in a log)."""

    yield from track(loader, total, f"corruptions {label} images", progress, size=lambda batch: len(batch["index"]))


@contextlib.contextmanager
def _opencv_pool_paused(num_workers: int) -> Iterator[None]:
    """OpenCV's thread pool does not survive fork: a loader worker forked while the parent's
    pool threads wait on their condition variable hangs on its first pool call. With workers,
    the parent (which has imported OpenCV with imagecorruptions) runs OpenCV on one thread,
    hence without pool threads, while they live, and gets its thread count back after."""
    cv2 = sys.modules.get("cv2")
    if not num_workers or cv2 is None:
        yield
        return
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _single_threaded_worker(worker_id: int) -> None:
    """One OpenCV thread per worker process: the workers are the parallelism. A worker that
    inherits OpenCV from its parent inherits its single thread (`_opencv_pool_paused`) and
    must not touch the pool; one that imports it itself sets it."""
    if "cv2" in sys.modules:
        return
    try:
        import cv2
    except ImportError:
        return
    cv2.setNumThreads(1)
