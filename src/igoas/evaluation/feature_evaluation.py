"""Evaluate query and gallery features end to end, in query blocks so memory stays bounded."""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from igoas.evaluation.arrays import ArrayLike, as_feature_pair, as_ids, rows_per_block
from igoas.evaluation.distance import get_metric
from igoas.evaluation.query_expansion import expand_query_features
from igoas.evaluation.rank import RankAccumulator, evaluate_rank
from igoas.evaluation.rerank import k_reciprocal_rerank
from igoas.evaluation.result import RankResult
from igoas.evaluation.verification import PairSampler, tpr_at_fprs
from igoas.utils.progress import announce, track


def evaluate_features(
    qf: ArrayLike,
    gf: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    metric: str = "euclidean",
    max_rank: int = 50,
    rerank: bool = False,
    rerank_params: Sequence[float] = (20, 6, 0.3),
    query_expansion: int = 0,
    query_expansion_alpha: float = 0.0,
    chunk_size: int | None = None,
    fprs: Sequence[float] = (),
    progress: bool = False,
    progress_label: str = "ranking queries",
) -> RankResult:
    """CMC, mAP and mINP of query features against gallery features.

    `metric`: "euclidean" (squared, as torchreid) or "cosine". `query_expansion=k` replaces
    each query by the mean of itself and its k nearest gallery features
    (`query_expansion_alpha>0`: alpha-QE weights). `rerank` applies k-reciprocal
    re-ranking with `rerank_params=(k1, k2, lambda)`; its output is a dense query x gallery
    matrix, so only that mode holds one. Otherwise distances exist only `chunk_size`
    query rows at a time (default: about 128 MiB per block). Features may live on a GPU:
    the work then runs there. `fprs` (e.g. (1e-4, 1e-3, 1e-2)) adds the true positive rate
    at those false positive rates of the same distances (`RankResult.tpr_at_fpr`).
    `progress` shows the ranking's progress (`igoas.utils.progress`), under `progress_label`.
    """
    chosen = get_metric(metric)
    queries, gallery = as_feature_pair(qf, gf)
    num_query, num_gallery = queries.shape[0], gallery.shape[0]
    q_pids_t, q_camids_t = as_ids(q_pids, "q_pids", num_query), as_ids(q_camids, "q_camids", num_query)
    g_pids_t, g_camids_t = as_ids(g_pids, "g_pids", num_gallery), as_ids(g_camids, "g_camids", num_gallery)

    queries = expand_query_features(queries, gallery, query_expansion, query_expansion_alpha, metric, chunk_size)
    queries, gallery = chosen.prepare(queries), chosen.prepare(gallery)
    pairs = PairSampler(q_pids_t, g_pids_t, g_camids_t) if fprs else None
    step = rows_per_block(num_gallery, chunk_size)
    if rerank:
        k1, k2, lambda_value = rerank_params
        announce(f"{progress_label}: k-reciprocal re-ranking of {num_query} x {num_gallery}", progress)
        distances = k_reciprocal_rerank(queries, gallery, int(k1), int(k2), float(lambda_value), chunk_size)
        result = evaluate_rank(distances, q_pids_t, g_pids_t, q_camids_t, g_camids_t, max_rank, chunk_size)
        for start in range(0, num_query, step) if pairs is not None else ():
            rows = slice(start, start + step)
            pairs.add(distances[rows], q_pids_t[rows], q_camids_t[rows])
    else:
        accumulator = RankAccumulator(g_pids_t, g_camids_t, max_rank)
        distance_to_gallery = chosen.to_gallery(gallery)
        blocks = track(range(0, num_query, step), num_query, progress_label, enabled=progress,
                       size=lambda start: min(step, num_query - start))
        for start in blocks:
            rows = slice(start, start + step)
            block = distance_to_gallery(queries[rows])
            accumulator.add(block, q_pids_t[rows], q_camids_t[rows])
            if pairs is not None:
                pairs.add(block, q_pids_t[rows], q_camids_t[rows])
        result = accumulator.result()
    return result if pairs is None else replace(result, tpr_at_fpr=tpr_at_fprs(pairs, fprs))
