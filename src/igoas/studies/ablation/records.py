"""The small per-run record of the ablation: what a finished (arm, seed) run contributes to
the study, without its checkpoints, so that records can be committed and a study can be
completed across several sessions.

A record holds the run's final metrics, its evaluation curve (metrics.jsonl), each
occluded and holistic query's AP and rank-1 hit (for the paired bootstrap), a summary of
the stage-4 mask activity and mask-loss terms from the training log, the stress-test
records, extra evaluations, the pretrained trunk's SHA-256, the config fingerprint and
the times.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from omegaconf import DictConfig

from igoas.artifacts.checkpoint import model_from_checkpoint
from igoas.artifacts.provenance import sha256_of
from igoas.artifacts.run_dir import RunDir
from igoas.compute.runtime import Runtime
from igoas.data.base import ReIDDataset
from igoas.evaluation.distance import compute_distance
from igoas.evaluation.model_evaluation import embed_samples
from igoas.robustness.occlusion_stress import REPORTED_METRICS
from igoas.studies.ablation.statistics import per_query_scores
from igoas.studies.fingerprint import as_json, same_recipe
from igoas.utils.errors import IgoasError
from igoas.utils.fileio import read_jsonl, write_json

RUN_RECORD = "ablation_run.json"
TRUNK_RECORD = "ablation_trunk.json"  # the pretrained trunk's identity, written when a run starts
PER_QUERY_SETS = ("query", "holistic")
# Where the trunk lives does not change what a run learns; its content (SHA-256) does.
PATH_KEYS = ("model.pretrained",)


def read_json(path: Path) -> Any:
    """The JSON document at `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def record_path(records_dir: Path, arm: str, seed: int) -> Path:
    """Where the committed record of (arm, seed) lives in a records folder."""
    return records_dir / arm / f"seed{seed}.json"


def matches(record: Any, fingerprint: Mapping[str, Any], stress: Mapping[str, Any], trunk_sha256: str | None) -> bool:
    """True when `record` was made with this recipe, this stress test and a pretrained trunk
    of the same content (`trunk_sha256`, None for a run without a pretrained file)."""
    return (isinstance(record, dict) and isinstance(record.get("config"), dict) and bool(record["config"])
            and same_recipe(without_paths(record["config"]), without_paths(fingerprint))
            and record.get("stress_settings") == stress and started_from(record) == trunk_sha256)


def without_paths(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """The fingerprint without PATH_KEYS (compared by content instead)."""
    values = as_json(fingerprint)
    for key in PATH_KEYS:
        section, name = key.split(".")
        values.get(section, {}).pop(name, None)
    return values


def started_from(record: Mapping[str, Any]) -> str | None:
    """The SHA-256 of the trunk a record's run started from (None: no pretrained file)."""
    return (record.get("pretrained") or {}).get("sha256") or None


def trunk_sha256(pretrained: bool | str | None) -> str | None:
    """The SHA-256 of the pretrained file `model.pretrained` names now (None: not a file)."""
    return (pretrained_identity(pretrained) or {}).get("sha256") or None


def pretrained_identity(pretrained: bool | str | None) -> dict[str, str] | None:
    """The pretrained weights a run started from: the path and, for a file, its SHA-256."""
    if isinstance(pretrained, str) and Path(pretrained).is_file():
        return {"path": pretrained, "sha256": sha256_of(pretrained)}
    if pretrained in (False, None):
        return None
    return {"path": str(pretrained), "sha256": ""}


def final_metrics(run_dir: Path) -> dict[str, dict[str, float]]:
    """Per query set, the reported metrics of the run's last evaluation (metrics.json)."""

    path = RunDir(run_dir).final_metrics
    saved = read_json(path)
    if not isinstance(saved, dict) or not isinstance(saved.get("query_sets"), dict):
        raise IgoasError(f"{path}: missing or unreadable; delete {run_dir} and run the study "
                         "again to retrain this arm")
    return {name: {metric: float(values[metric]) for metric in REPORTED_METRICS}
            for name, values in saved["query_sets"].items()}


def evaluation_curve(run_dir: Path) -> list[dict[str, Any]]:
    """Every evaluation of the run: epoch and, per query set, the reported metrics."""

    path = RunDir(run_dir).metrics_log
    curve = []
    for record in read_jsonl(path) if path.is_file() else []:
        sets = {name: {m: float(v[m]) for m in REPORTED_METRICS if m in v}
                for name, v in record.items() if isinstance(v, dict)}
        curve.append({"epoch": int(record["epoch"]), **sets})
    return curve


def mask_activity(run_dir: Path) -> dict[str, Any] | None:
    """Summary of the stage-4 mask activity over the logged steps after the first epoch:
    the share of steps with at least one zeroed map cell, the mean zeroed and hidden
    fractions and each mask-loss term's mean (None when no step after the first epoch was
    logged), plus per-epoch means for the figures. None for a run without an occlusion mask."""

    path = RunDir(run_dir).train_log
    steps = [r for r in (read_jsonl(path) if path.is_file() else []) if "mask_zeroed_cells" in r]
    if not steps:
        return None
    later = [r for r in steps if int(r["epoch"]) > 1]  # logged epochs count from 1
    terms = ("mask_suppression", "mask_global")

    def mean(records: list[dict[str, Any]], key: str) -> float | None:
        values = [r["loss"][key] if key in terms else r[key] for r in records
                  if (key in r.get("loss", {}) if key in terms else key in r)]
        return float(np.mean(values)) if values else None

    epochs = sorted({int(r["epoch"]) for r in steps})
    return {
        "logged_steps": len(later),
        "share_with_zeroed_cell": float(np.mean([r["mask_zeroed_cells"] > 0 for r in later])) if later else None,
        "mean_zeroed_cells": mean(later, "mask_zeroed_cells"), "mean_hidden": mean(later, "mask_hidden"),
        **{term: mean(later, term) for term in terms},
        "per_epoch": [{"epoch": epoch, **{key: mean([r for r in steps if int(r["epoch"]) == epoch], key)
                                          for key in ("mask_zeroed_cells", "mask_hidden", "occluded_fraction", *terms)}}
                      for epoch in epochs],
    }


def query_scores(checkpoint: Path, dataset: ReIDDataset, cfg: DictConfig, device: str,
                 precision: str) -> dict[str, dict[str, list]]:
    """Per-query AP and rank-1 hit of the occluded ("query") and holistic queries, rounded
    to 5 decimals (the record stays small; the means are unchanged to 1e-5)."""

    model, payload = model_from_checkpoint(checkpoint)
    runtime = Runtime.resolve(device, precision)
    sets = {"gallery": dataset.gallery, "query": dataset.query, **dict(getattr(dataset, "extra_queries", {}) or {})}
    features = {name: embed_samples(model, samples, payload, cfg.eval, runtime)
                for name, samples in sets.items() if name == "gallery" or name in PER_QUERY_SETS}
    gallery = features.pop("gallery")
    scores = {}
    for name, queries in features.items():
        distances = compute_distance(queries.embeddings, gallery.embeddings, metric=cfg.eval.metric)
        values = per_query_scores(distances, queries.pids, gallery.pids, queries.camids, gallery.camids)
        scores[name] = {key: [round(v, 5) for v in series] for key, series in values.items()}
    return scores


def save_record(record: Mapping[str, Any], *paths: Path) -> None:
    """Write the record to every given path (the run folder's copy and the committed one)."""
    for path in paths:
        write_json(path, record, indent=1)
