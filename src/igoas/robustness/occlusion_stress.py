"""Occlusion stress test: how retrieval degrades as more of each query is hidden.

Every query image is occluded in pixel space (after the resize, before mean/std
normalisation) by one occluder covering an exact percentage of the image at a chosen
place (`igoas.robustness.occluder_painting`); the gallery is left untouched. Each checkpoint is
evaluated at every (position, area) pair, so an occlusion-robust model (IGOAS) and a
baseline can be compared on any dataset.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch

from igoas.artifacts.checkpoint import model_from_checkpoint
from igoas.artifacts.provenance import checkpoint_identity, software_versions
from igoas.artifacts.run_dir import CHECKPOINTS
from igoas.compute.runtime import Runtime
from igoas.data import query_samples
from igoas.data.base import ReIDDataset
from igoas.evaluation import evaluate_features
from igoas.evaluation.embedding import embed
from igoas.imaging.images import load_image
from igoas.imaging.preprocess import Preprocess
from igoas.robustness.occluder_painting import (build_occluder, occluded_pixel_count, occlusion_mask, paint_occluder,
                                                query_rng)
from igoas.utils.errors import ConfigError
from igoas.utils.fileio import write_json
from igoas.viz.robustness_figure import plot_robustness

if TYPE_CHECKING:
    from igoas.compute.runtime import Runtime

DEFAULT_AREAS = (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0)
DEFAULT_POSITIONS = ("top", "bottom", "left", "right", "random")
REPORTED_METRICS = ("R1", "R5", "R10", "mAP", "mINP")


# ----------------------------------------------------------------------------- the images fed to the model
class OccludedImages(torch.utils.data.Dataset):
    """Samples resized by a checkpoint's `Preprocess`, occluded in pixel space, then normalised.

    Items are the prepared dicts `embed` reads (image, pid, camid, path, index) plus
    `occluded_pixels`, the number of pixels the occluder covers. Pixels outside the
    occluder (all of them at area 0) are exactly those evaluation feeds the network.
    """

    def __init__(self, samples: Sequence[Any], preprocess: Any, area_percent: float = 0.0, position: str = "top",
                 occluder: str = "rectangle", seed: int = 0, fill: str = "random") -> None:
        self.samples, self.preprocess = list(samples), preprocess
        self.area_percent, self.position, self.occluder, self.seed, self.fill = (
            area_percent, position, occluder, seed, fill)
        _check_settings([area_percent], [position], occluder, fill)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        decoded = load_image(sample.path)
        image = self.preprocess.prepare(decoded)  # the visible pixels: exactly as evaluation reads them
        pixels = self.preprocess.resize(decoded)
        occluded, mask = paint_occluder(pixels, self.area_percent, self.position, self.occluder,
                                 query_rng(self.seed, index, self.position, self.area_percent), self.fill)
        covered = int(mask.sum())
        if covered:
            image = torch.where(torch.from_numpy(mask), self.preprocess.normalize(occluded[None])[0], image)
        return {"image": image, "pid": sample.pid, "camid": sample.camid, "path": str(sample.path), "index": index,
                "occluded_pixels": covered}


# ----------------------------------------------------------------------------- the test
@dataclass
class StressRecord:
    """Metrics (percent) of one checkpoint with its queries occluded at one position and area."""

    checkpoint: str
    position: str
    area: float
    occluded_percent: float
    R1: float
    R5: float
    R10: float
    mAP: float
    mINP: float
    num_queries: int


@dataclass
class StressTestResult:
    """Every record of a stress test and the settings that produced it."""

    records: list[StressRecord]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"settings": dict(self.settings), "results": [asdict(record) for record in self.records]}

    def table(self) -> str:
        """An aligned text table: one line per (checkpoint, position, area)."""
        name_width = max([len("checkpoint")] + [len(r.checkpoint) for r in self.records])
        lines = [f"{'checkpoint':<{name_width}}  {'position':<8}  {'area%':>5}  {'R1':>5}  {'mAP':>5}  {'mINP':>5}"]
        for r in self.records:
            lines.append(f"{r.checkpoint:<{name_width}}  {r.position:<8}  {r.area:5.1f}  {r.R1:5.1f}  {r.mAP:5.1f}  "
                         f"{r.mINP:5.1f}")
        return "\n".join(lines)


def occlusion_stress_test(
    checkpoints: Sequence[Any] | Mapping[str, Any],
    dataset: ReIDDataset,
    areas: Sequence[float] = DEFAULT_AREAS,
    positions: Sequence[str] = DEFAULT_POSITIONS,
    *,
    occluder: str = "rectangle",
    fill: str = "random",
    seed: int = 0,
    query_set: str = "query",
    metric: str = "euclidean",
    batch_size: int = 64,
    num_workers: int = 0,
    runtime: Runtime | None = None,
    flip: bool = False,
    log: Callable[[str], None] | None = None,
) -> StressTestResult:
    """Evaluate each checkpoint with the queries of `dataset` occluded at every (position, area).

    `checkpoints` are paths or loaded checkpoint payloads, or a {label: checkpoint}
    mapping (labels default to the file names). `areas` are percentages of the image;
    area 0 is evaluated once per checkpoint and reported for every position, so each
    curve starts from the clean score. `query_set` is "query" or the name of one of the
    dataset's extra query sets. The gallery features are computed once per checkpoint.
    `runtime` is where the networks run (default: CPU, fp32).
    """

    labelled = labelled_checkpoints(checkpoints)
    queries = query_samples(dataset, query_set)
    areas, positions = [float(a) for a in areas], list(positions)
    _check_settings(areas, positions, occluder, fill)
    runtime = runtime or Runtime()

    def features(model: torch.nn.Module, samples: Sequence[Any], preprocess: Preprocess, area: float,
                 position: str) -> tuple[Any, float]:
        images = OccludedImages(samples, preprocess, area, position, occluder, seed, fill)
        extracted = embed(model, images, runtime=runtime, flip=flip, batch_size=batch_size, num_workers=num_workers)
        covered = occluded_pixel_count(area, preprocess.height, preprocess.width)
        return extracted, 100.0 * covered / (preprocess.height * preprocess.width)

    records: list[StressRecord] = []
    for label, checkpoint in labelled.items():
        model, payload = model_from_checkpoint(checkpoint)
        preprocess = Preprocess.resolve(payload, label)
        gallery, _ = features(model, dataset.gallery, preprocess, 0.0, positions[0])
        clean: tuple[dict[str, float], float] | None = None
        for position in positions:
            for area in areas:
                if area == 0.0 and clean is not None:
                    scores, covered = clean
                else:
                    query, covered = features(model, queries, preprocess, area, position)
                    result = evaluate_features(query.embeddings, gallery.embeddings, query.pids, gallery.pids,
                                               query.camids, gallery.camids, metric=metric)
                    scores = result.to_dict()
                    if area == 0.0:
                        clean = (scores, covered)
                # the CMC runs to rank 50 and keeps its last value past the gallery's size, so R5 and R10
                # exist (and are finite) for any gallery
                metrics = {name: float(scores[name]) for name in REPORTED_METRICS}
                records.append(StressRecord(checkpoint=label, position=position, area=area, occluded_percent=covered,
                                            num_queries=len(queries), **metrics))
                if log is not None:
                    log(f"{label}  {position:<6}  area {area:4.1f}%  R1 {records[-1].R1:5.1f}  mAP {records[-1].mAP:5.1f}")

    settings = {"dataset": getattr(dataset, "name", None), "root": _root(dataset), "query_set": query_set,
                "occluder": occluder, "fill": fill if occluder == "rectangle" else None, "seed": seed,
                "metric": metric, "areas": areas, "positions": positions, "flip": flip, "precision": runtime.precision,
                "checkpoints": {label: checkpoint_identity(checkpoint) for label, checkpoint in labelled.items()},
                "versions": software_versions()}
    return StressTestResult(records, settings)


def _root(dataset: Any) -> str | None:
    root = getattr(dataset, "root", None)
    return str(root) if root is not None else None


def write_stress_test(result: StressTestResult, out_dir: str | Path) -> dict[str, Path]:
    """Write `robustness.json` (settings and every record) and `robustness.png` (the curves) to `out_dir`."""

    out_dir = Path(out_dir)
    data = result.to_dict()
    json_path = write_json(out_dir / "robustness.json", data)
    return {"json": json_path, "figure": plot_robustness(data["results"], out_dir / "robustness.png")}


def _check_settings(areas: Sequence[float], positions: Sequence[str], occluder: str, fill: str) -> None:
    """Fail before any model runs when a setting is wrong (each check raises ConfigError naming it)."""
    if not areas or not positions:
        raise ConfigError("the stress test needs at least one area and one position")
    for area in areas:
        occluded_pixel_count(area, 1, 1)
    for position in positions:
        occlusion_mask(1, 1, 0.0, position, np.random.default_rng(0))
    build_occluder(occluder, fill)


def labelled_checkpoints(checkpoints: Sequence[Any] | Mapping[str, Any]) -> dict[str, Any]:
    """{label: checkpoint} of the robustness suites' `checkpoints` argument (paths, payloads
    or a mapping); file stems by default, made unique with the folders above them, where a
    run's `checkpoints/` folder gives way to the run's own name (runs/igoas/checkpoints/best.pth
    and runs/baseline/checkpoints/best.pth are "igoas/best" and "baseline/best")."""
    if isinstance(checkpoints, Mapping) and not _is_payload(checkpoints):
        labelled = {str(label): value for label, value in checkpoints.items()}
    else:
        items = [checkpoints] if _is_payload(checkpoints) else list(checkpoints)
        labelled = dict(zip(_unique_names(items), items))
    if not labelled:
        raise ConfigError("a robustness test needs at least one checkpoint")
    return labelled


def _unique_names(items: Sequence[Any]) -> list[str]:
    """The shortest labels that tell `items` apart: a path's stem, then its folders' names
    (a `checkpoints` folder skipped), else numbered; payloads are model0, model1, ..."""
    parts = [[Path(item).stem, *(folder for folder in Path(item).resolve().parent.parts[::-1][:-1]
                                  if folder != CHECKPOINTS)]
             if isinstance(item, (str, Path)) else [f"model{index}"] for index, item in enumerate(items)]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(reversed(p[:depth])) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{index}:{'/'.join(reversed(p[:2]))}" for index, p in enumerate(parts)]   # the same file twice


def _is_payload(value: Any) -> bool:
    return isinstance(value, Mapping) and "model_spec" in value
