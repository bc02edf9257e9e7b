"""The study's corrupted column: each run's holistic queries under the corruption benchmark's
20 corruptions x 5 severities against the clean gallery (`igoas.corruptions`), summarised
by the mean R1 / mAP / mINP over the 100 conditions.

Non-occlusion damage (blur, noise, weather, compression) on unoccluded queries: whether
IGOAS's occlusion training helps, hurts or is neutral there. Corrupted images do not
depend on the model, so they are corrupted once per study and cached beside the data
(`<data root>_corrupted`); every later run only decodes and embeds them.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from omegaconf import DictConfig

from igoas.compute.runtime import Runtime
from igoas.corruptions import CORRUPTIONS, SEVERITIES
from igoas.data.base import ReIDDataset
from igoas.robustness.corruption_benchmark import corruption_summary, mean_corrupted_map

SEED = 0  # one fixed set of corrupted images for every arm and seed
# The reduced study's grid (a pipeline check): one noise, one photometric and one codec
# corruption at the mildest and harshest severities, 6 conditions instead of 100.
REDUCED_CORRUPTIONS, REDUCED_SEVERITIES = ("gaussian_noise", "contrast", "jpeg_compression"), (1, 5)
CORRUPTING_WORKERS = 2  # processes corrupting the first run's images (the recipe loads in the main process)


def corrupted_evaluation(checkpoint: Path, dataset: ReIDDataset, cfg: DictConfig, reduced: bool = False) -> dict[str, float]:
    """{"R1", "mAP", "mINP"}: means over the corruption grid of one run's checkpoint, in percent
    (the whole grid, or with `reduced` the pipeline check's 6 conditions)."""

    query_set = "holistic" if "holistic" in (getattr(dataset, "extra_queries", None) or {}) else "query"
    root = Path(dataset.root)
    summary = corruption_summary(
        checkpoint, dataset, corruptions=REDUCED_CORRUPTIONS if reduced else CORRUPTIONS,
        severities=REDUCED_SEVERITIES if reduced else SEVERITIES, settings=("query",), query_set=query_set,
        seed=SEED, metric=cfg.eval.metric,
        flip=cfg.eval.flip, runtime=Runtime.resolve(cfg.train.device, cfg.eval.precision),
        batch_size=cfg.eval.batch_size, num_workers=max(cfg.eval.num_workers, min(CORRUPTING_WORKERS,
                                                                                   os.cpu_count() or 1)),
        cache_dir=root.with_name(root.name + "_corrupted"), progress=False)
    means = summary["query"]["mean"]
    return {"R1": float(means["R1"]), "mAP": mean_corrupted_map(summary), "mINP": float(means["mINP"])}


def available() -> bool:
    """Whether the `corruptions` extra is installed (without it the column stays n/a)."""
    return importlib.util.find_spec("imagecorruptions") is not None
