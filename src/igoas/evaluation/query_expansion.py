"""Query expansion: replace each query by a weighted mean of itself and its nearest gallery features.

`alpha=0` is average query expansion (plain mean); `alpha>0` is alpha-query expansion
(Radenovic et al.), weighting each neighbour by its cosine similarity to the query raised
to `alpha`, so far neighbours count less.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from igoas.evaluation.arrays import ArrayLike, as_feature_pair, rows_per_block
from igoas.evaluation.distance import get_metric
from igoas.evaluation.neighbours import stable_topk
from igoas.utils.errors import IgoasError


def expand_queries(
    qf: ArrayLike,
    gf: ArrayLike,
    top_k: int,
    alpha: float = 0.0,
    metric: str = "euclidean",
    chunk_size: int | None = None,
) -> ArrayLike:
    """Expanded query features, the same kind (numpy or torch) and shape as `qf`."""
    queries, gallery = as_feature_pair(qf, gf)
    expanded = expand_query_features(queries, gallery, top_k, alpha, metric, chunk_size)
    return expanded if isinstance(qf, torch.Tensor) else expanded.numpy()


def expand_query_features(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    top_k: int,
    alpha: float = 0.0,
    metric: str = "euclidean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """`expand_queries` on checked tensors; neighbours are found with `metric`."""
    if top_k < 0 or alpha < 0:
        raise IgoasError(f"query expansion needs top_k >= 0 and alpha >= 0, got top_k={top_k}, alpha={alpha}")
    if top_k == 0:
        return queries
    chosen = get_metric(metric)
    distance_to_gallery = chosen.to_gallery(chosen.prepare(gallery))
    unit_gallery = F.normalize(gallery, dim=1)
    expanded = torch.empty_like(queries)
    step = rows_per_block(gallery.shape[0], chunk_size)
    for start in range(0, queries.shape[0], step):
        block = queries[start : start + step]
        _, neighbours = stable_topk(distance_to_gallery(chosen.prepare(block)), top_k)
        members = torch.cat([block[:, None, :], gallery[neighbours]], dim=1)
        weights = torch.ones(members.shape[:2], dtype=queries.dtype, device=queries.device)
        if alpha > 0:
            similarity = torch.einsum("qd,qkd->qk", F.normalize(block, dim=1), unit_gallery[neighbours])
            weights[:, 1:] = similarity.clamp_min(0).pow(alpha)
        expanded[start : start + step] = (weights[..., None] * members).sum(1) / weights.sum(1, keepdim=True)
    return expanded
