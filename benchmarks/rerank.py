"""Time, peak memory and exactness of `k_reciprocal_rerank` (k1=20, k2=6, lambda=0.3) against the dense reference.

The reference is the widely used dense algorithm (numpy; (q+g) x (q+g) distance, rank and
encoding matrices), written here plainly, with neighbours ranked by float64 distances (the
definition; float32 rounding can swap near-equal neighbours). It runs at full Market-1501
size (3,368 x 15,913, 1024-d; minutes and about 7 GB of memory), giving the speed-up and the
largest difference between the two outputs, which must be float rounding only (<= 1e-5).

Goals on 2 cores: Market-shaped <= 7 s, <= 2 GB peak and >= 10x the reference;
MSMT17-shaped (11,659 x 82,161, `--msmt`) <= 3 minutes and <= 8 GB. Each case runs in a
fresh process so its peak RSS is its own (tracemalloc sees numpy allocations only).

    python benchmarks/rerank.py [--msmt]

Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time
import tracemalloc
from typing import Any

import numpy as np
import torch

from evaluation import MARKET, MSMT, planted_problem  # benchmarks/evaluation.py: same synthetic data
from igoas.evaluation import k_reciprocal_rerank

K1, K2, LAMBDA = 20, 6, 0.3
GOALS = {"market": (7.0, 2.0), "msmt17": (180.0, 8.0)}  # seconds, GB
GOAL_SPEEDUP, GOAL_DIFFERENCE = 10.0, 1e-5
SHAPES = {"market": MARKET, "msmt17": MSMT}


def dense_rerank(qf: np.ndarray, gf: np.ndarray, k1: int, k2: int, lambda_value: float) -> np.ndarray:
    """Zhong et al.'s re-ranking with dense matrices over all q+g samples (stable argsort)."""
    features = np.concatenate([qf, gf]).astype(np.float64)
    num_query, total = len(qf), len(features)
    squared = (features**2).sum(1)
    dist = np.empty((total, total), dtype=np.float32)
    rank = np.empty((total, total), dtype=np.int32)
    for start in range(0, total, 1024):
        block = np.maximum(squared[start : start + 1024, None] + squared[None, :]
                           - 2 * features[start : start + 1024] @ features.T, 0)
        block /= block.max(axis=1, keepdims=True)
        rank[start : start + 1024] = np.argsort(block, axis=1, kind="stable")
        dist[start : start + 1024] = block
    half = int(np.around(k1 / 2)) + 1

    def reciprocal(i: int, count: int) -> np.ndarray:
        forward = rank[i, :count]
        return forward[np.where(rank[forward, :count] == i)[0]]

    encoding = np.zeros_like(dist)
    for i in range(total):
        base = reciprocal(i, k1 + 1)
        expanded = base
        for candidate in base:
            theirs = reciprocal(candidate, half)
            if len(np.intersect1d(theirs, base)) > 2.0 / 3.0 * len(theirs):
                expanded = np.append(expanded, theirs)
        expanded = np.unique(expanded)
        weights = np.exp(-dist[i, expanded])
        encoding[i, expanded] = weights / weights.sum()
    if k2 != 1:
        encoding = np.stack([encoding[rank[i, :k2]].mean(axis=0) for i in range(total)])
    inverted = [np.where(encoding[:, j] != 0)[0] for j in range(total)]
    result = np.empty((num_query, total - num_query), dtype=np.float32)
    for i in range(num_query):
        shared = np.zeros(total, dtype=np.float32)
        for j in np.where(encoding[i] != 0)[0]:
            shared[inverted[j]] += np.minimum(encoding[i, j], encoding[inverted[j], j])
        jaccard = 1 - shared / (2 - shared)
        result[i] = (jaccard * (1 - lambda_value) + dist[i] * lambda_value)[num_query:]
    return result


def run_case(shape: str, method: str) -> dict[str, Any]:
    """Time one method on one problem shape, in this (fresh) process."""
    qf, gf = planted_problem(**SHAPES[shape])[:2]
    rerank = {"ours": k_reciprocal_rerank, "dense": dense_rerank}[method]
    tracemalloc.start()
    start = time.perf_counter()
    output = rerank(qf, gf, K1, K2, LAMBDA)
    seconds = time.perf_counter() - start
    case = {
        "seconds": round(seconds, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),  # KiB on Linux
        "peak_tracemalloc_gb": round(tracemalloc.get_traced_memory()[1] / 2**30, 2),
    }
    if method == "ours":
        goal_seconds, goal_gb = GOALS[shape]
        case.update(goal_s=goal_seconds, goal_gb=goal_gb,
                    meets_goal=seconds <= goal_seconds and case["peak_rss_gb"] <= goal_gb)
    if shape == "market":
        case["output"] = output  # compared in the parent
    return case


def isolated(shape: str, method: str) -> dict[str, Any]:
    """`run_case` in a fresh process, so earlier cases do not inflate its peak memory."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(run_case, (shape, method))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--msmt", action="store_true", help="also run the MSMT17-shaped case")
    args = parser.parse_args()
    ours, dense = isolated("market", "ours"), isolated("market", "dense")
    difference = float(np.abs(ours.pop("output") - dense.pop("output")).max())
    speedup = dense["seconds"] / ours["seconds"]
    report: dict[str, Any] = {
        "benchmark": "rerank",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "market": {"ours": ours, "dense": dense, "speedup": round(speedup, 2), "goal_speedup": GOAL_SPEEDUP,
                   "max_abs_difference": difference, "goal_difference": GOAL_DIFFERENCE,
                   "exact": difference <= GOAL_DIFFERENCE, "meets_speedup_goal": speedup >= GOAL_SPEEDUP},
    }
    if args.msmt:
        report["msmt17"] = {"ours": isolated("msmt17", "ours")}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
