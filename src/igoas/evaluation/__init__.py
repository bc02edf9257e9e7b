"""Re-identification evaluation on plain arrays: distances, CMC/mAP/mINP, re-ranking, query expansion.

Works on numpy arrays or torch tensors of features, identities and cameras; it never needs
the model or the datasets, so it scores anyone's features.
"""
from igoas.evaluation.distance import METRICS, average_flip_features, compute_distance
from igoas.evaluation.features import evaluate_features
from igoas.evaluation.query_expansion import expand_queries
from igoas.evaluation.rank import RankAccumulator, evaluate_rank
from igoas.evaluation.rerank import k_reciprocal_rerank
from igoas.evaluation.result import RankResult, format_table

__all__ = [
    "METRICS",
    "RankAccumulator",
    "RankResult",
    "average_flip_features",
    "compute_distance",
    "evaluate_features",
    "evaluate_rank",
    "expand_queries",
    "format_table",
    "k_reciprocal_rerank",
]
