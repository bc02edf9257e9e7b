"""Statistics of the ablation: summaries over seeds, per-query scores, the paired
bootstrap of one arm against another, and the checks of the study's criteria
(docs/ablation.md: mechanism active, pretrained start, plateau, seeds, benchmark)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from igoas.robustness.occlusion_stress import REPORTED_METRICS

TABLE_METRICS = ("R1", "mAP", "mINP")
# C1: after the first epoch, at least one whole map cell zeroed in this share of the steps.
MASK_ACTIVE_SHARE = 0.9
# C3: the last quarter of the epochs adds less than this many holistic mAP points.
PLATEAU_POINTS = 1.0
MIN_SEEDS = 3
# C5: Occluded-Duke's occluded shares (Miao et al., ICCV 2019) per split, and the tolerance in points.
OCCLUDED_DUKE_SHARES = {"train": 0.09, "query": 1.0, "gallery": 0.10}
SHARE_TOLERANCE_POINTS = 2.0


def statistics(values: Sequence[float]) -> dict[str, Any]:
    """Mean, standard deviation (n - 1; 0 for one value), min, max and the values."""
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "min": float(array.min()), "max": float(array.max()), "values": [float(v) for v in array]}


def summarize(runs: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per arm, per query set, per metric: statistics over seeds; the stress-test metrics
    averaged over every occluded setting (area > 0) as query set "stress"; and every
    extra evaluation (e.g. "corrupted") the runs of the arm all have."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for arm in arms:
        own = [run for run in runs if run["arm"] == arm]
        sets: dict[str, dict[str, Any]] = {}
        for query_set in own[0]["metrics"]:
            sets[query_set] = {metric: statistics([run["metrics"][query_set][metric] for run in own])
                               for metric in own[0]["metrics"][query_set]}
        sets["stress"] = {metric: statistics([np.mean([r[metric] for r in run["stress"] if r["area"] > 0])
                                              for run in own]) for metric in TABLE_METRICS}
        shared = set.intersection(*(set(run.get("evaluations") or {}) for run in own))
        for name in sorted(shared):
            sets[name] = {metric: statistics([run["evaluations"][name][metric] for run in own])
                          for metric in own[0]["evaluations"][name]}
        summary[arm] = sets
    return summary


def mean_stress(runs: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Per arm, the stress-test records averaged over seeds (one record per position and area)."""
    averaged: dict[str, list[dict[str, Any]]] = {}
    for arm in arms:
        groups: dict[tuple[str, float], list[Mapping[str, Any]]] = {}
        for run in runs:
            if run["arm"] == arm:
                for record in run["stress"]:
                    groups.setdefault((record["position"], float(record["area"])), []).append(record)
        averaged[arm] = [{"checkpoint": arm, "position": position, "area": area, "seeds": len(records),
                          "occluded_percent": records[0]["occluded_percent"],
                          **{m: float(np.mean([r[m] for r in records])) for m in REPORTED_METRICS}}
                         for (position, area), records in groups.items()]
    return averaged


def mean_curves(runs: Sequence[Mapping[str, Any]], arms: Sequence[str],
                query_sets: Sequence[str] = ("query", "holistic"), metric: str = "mAP") -> dict[str, dict[str, Any]]:
    """Per arm and query set: the evaluation epochs and the metric's mean and std over
    seeds at each epoch every seed evaluated."""
    curves: dict[str, dict[str, Any]] = {}
    for arm in arms:
        own = [run.get("curve") or [] for run in runs if run["arm"] == arm]
        epochs = sorted(set.intersection(*(set(point["epoch"] for point in curve) for curve in own))) if own else []
        arm_curves: dict[str, Any] = {"epochs": epochs}
        for query_set in query_sets:
            values = np.array([[next(p[query_set][metric] for p in curve if p["epoch"] == epoch) for epoch in epochs]
                               for curve in own]) if epochs else np.zeros((0, 0))
            arm_curves[query_set] = {"mean": values.mean(axis=0).tolist() if values.size else [],
                                     "std": values.std(axis=0, ddof=1).tolist() if len(values) > 1 else
                                     [0.0] * len(epochs)}
        curves[arm] = arm_curves
    return curves


# ----------------------------------------------------------------------------- per query
def per_query_scores(distances: torch.Tensor | np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray,
                     q_camids: np.ndarray, g_camids: np.ndarray) -> dict[str, list[float]]:
    """Each query's average precision and rank-1 hit (0 or 1) under the standard protocol
    (same identity and camera removed from its ranking), as the evaluator averages them;
    queries without a true match are left out, as the evaluator skips them."""
    dist = np.asarray(distances, dtype=np.float64)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    ap, r1 = [], []
    for row in range(dist.shape[0]):
        keep = ~((g_pids == q_pids[row]) & (g_camids == q_camids[row])) & (g_pids != -1)
        order = np.argsort(dist[row][keep], kind="stable")
        hits = (g_pids[keep] == q_pids[row])[order]
        if not hits.any():
            continue
        ranks = np.flatnonzero(hits)
        ap.append(float(np.mean(np.arange(1, len(ranks) + 1) / (ranks + 1))))
        r1.append(float(hits[0]))
    return {"ap": ap, "r1": r1}


def paired_bootstrap(treatment: Sequence[Mapping[str, Sequence[float]]], control: Sequence[Mapping[str, Sequence[float]]],
                     score: str, resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Bootstrap over queries of the difference treatment - control of a per-query score
    (`ap` or `r1`), in percent.

    `treatment[i]` and `control[i]` hold the per-query scores of one seed each (seed i
    paired with seed i, the same queries in the same order). Each resample draws query
    indices with replacement, the same indices for every seed; its statistic is the mean
    over seeds of the mean over the drawn queries of the difference. Returns the observed
    difference and the `level` percentile interval.
    """
    if len(treatment) != len(control) or not treatment:
        raise ValueError("paired_bootstrap needs the same, non-zero number of seeds on both sides")
    differences = np.array([np.asarray(t[score], dtype=np.float64) - np.asarray(c[score], dtype=np.float64)
                            for t, c in zip(treatment, control)])  # seeds x queries
    queries = differences.shape[1]
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # chunks keep the index array small
        count = min(1000, resamples - start)
        picks = rng.integers(0, queries, size=(count, queries))
        means[start:start + count] = differences[:, picks].mean(axis=2).mean(axis=0)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"difference": 100 * float(differences.mean()), "low": 100 * float(low), "high": 100 * float(high),
            "level": level, "resamples": resamples, "queries": queries, "seeds": len(treatment)}


def verdict(interval: Mapping[str, float]) -> str:
    """The conclusion rule: above 0, below 0, or neither."""
    if interval["low"] > 0:
        return "beats"
    if interval["high"] < 0:
        return "loses"
    return "no difference detected"


# ----------------------------------------------------------------------------- criteria
def plateau_gain(curve: Sequence[Mapping[str, Any]], epochs: int, query_set: str = "holistic",
                 metric: str = "mAP") -> float | None:
    """Metric at the last evaluation minus at the last evaluation at or before 3/4 of the
    epochs; None when the curve lacks either point."""
    points = {int(point["epoch"]): point[query_set][metric] for point in curve if query_set in point}
    early = [epoch for epoch in points if epoch <= 0.75 * epochs]
    if epochs not in points or not early:
        return None
    return float(points[epochs] - points[max(early)])


def fixbase_for(epochs: int) -> int:
    """The recipe's fixbase epochs for a budget of `epochs`: the published 5 of 90, at least 1."""
    return max(1, round(5 * epochs / 90))


def check_criteria(runs: Sequence[Mapping[str, Any]], arms: Sequence[str], seeds: Sequence[int], epochs: int,
                   masked_arms: Sequence[str] = (), occluded_shares: Mapping[str, Mapping[str, Any]] | None = None
                   ) -> dict[str, Any]:
    """C1 (mechanism active), C2 (one pretrained start), C3 (baseline plateau), C4 (seed
    count) and C5 (occluded shares like Occluded-Duke's) on the finished runs, each with
    its numbers and `passed`. `masked_arms` are the arms trained with an occlusion mask (an
    arm among them without logged mask activity fails C1); `occluded_shares` is the
    benchmark's {split: {"occluded_share": ...}} (None: C5 not checked, not passed)."""
    mask: dict[str, Any] = {}
    for arm in arms:
        activity = [run.get("mask_activity") for run in runs if run["arm"] == arm]
        if arm not in masked_arms and all(a is None for a in activity):
            continue
        if not activity or any(a is None or a.get("share_with_zeroed_cell") is None for a in activity):
            mask[arm] = {"passed": False, "problem": "no mask activity logged after the first epoch"}
            continue
        shares = [a["share_with_zeroed_cell"] for a in activity]
        entry = {"share_with_zeroed_cell": statistics(shares),
                 "zeroed_cells": statistics([a["mean_zeroed_cells"] for a in activity]),
                 "passed": min(shares) >= MASK_ACTIVE_SHARE}
        for term in ("mask_suppression", "mask_global"):
            if all(a.get(term) is not None for a in activity):
                entry[term] = statistics([a[term] for a in activity])
                entry["passed"] = entry["passed"] and min(entry[term]["values"]) > 0
        mask[arm] = entry
    trunks = {(run.get("pretrained") or {}).get("sha256") or None for run in runs}
    fixbase = {run["config"]["train"]["fixbase_epochs"] for run in runs}
    plateau = {}
    for arm in arms:
        gains = [plateau_gain(run.get("curve") or [], epochs) for run in runs if run["arm"] == arm]
        if gains and all(g is not None for g in gains):
            plateau[arm] = statistics(gains)
    baseline_gain = plateau.get("baseline")
    return {
        "C1_mechanism_active": {"arms": mask, "threshold": MASK_ACTIVE_SHARE,
                                "passed": bool(mask) and all(entry["passed"] for entry in mask.values())},
        "C2_pretrained_start": {"trunks": sorted(t for t in trunks if t), "fixbase_epochs": sorted(fixbase),
                                "expected_fixbase_epochs": fixbase_for(epochs),
                                "passed": len(trunks) == 1 and None not in trunks
                                and fixbase == {fixbase_for(epochs)}},
        "C3_plateau": {"gain_last_quarter": plateau, "threshold": PLATEAU_POINTS,
                       "passed": baseline_gain is not None and baseline_gain["mean"] < PLATEAU_POINTS},
        "C4_seeds": {"seeds": list(seeds), "passed": len(seeds) >= MIN_SEEDS},
        "C5_benchmark": benchmark_criterion(occluded_shares),
    }


def benchmark_criterion(occluded_shares: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    """C5: each split's occluded share within SHARE_TOLERANCE_POINTS of Occluded-Duke's."""
    if not occluded_shares:
        return {"passed": False, "problem": "the set's occluded shares are unknown (no meta.json)"}
    splits = {}
    for split, target in OCCLUDED_DUKE_SHARES.items():
        share = (occluded_shares.get(split) or {}).get("occluded_share")
        splits[split] = {"share": share, "occluded_duke": target,
                         "passed": share is not None and abs(share - target) * 100 <= SHARE_TOLERANCE_POINTS}
    return {"splits": splits, "tolerance_points": SHARE_TOLERANCE_POINTS,
            "passed": all(entry["passed"] for entry in splits.values())}
