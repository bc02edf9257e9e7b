"""Re-identification evaluation on plain arrays: distances, CMC/mAP/mINP, re-ranking, query expansion.

The metrics work on numpy arrays or torch tensors of features, identities and cameras, so
they score anyone's features. Two modules bring a model in: `embedding` (`embed`, the one
way images become embeddings) and `model_evaluation` (a model or checkpoint on datasets);
import them by name.
"""
from igoas.evaluation.distance import METRICS, average_flip_features, compute_distance
from igoas.evaluation.feature_evaluation import evaluate_features
from igoas.evaluation.query_expansion import expand_queries
from igoas.evaluation.rank import RankAccumulator, evaluate_rank
from igoas.evaluation.rerank import k_reciprocal_rerank
from igoas.evaluation.result import RankResult, format_table
from igoas.evaluation.topk_rank import TopKResult, evaluate_topk

__all__ = [
    "METRICS",
    "RankAccumulator",
    "RankResult",
    "TopKResult",
    "average_flip_features",
    "compute_distance",
    "evaluate_features",
    "evaluate_rank",
    "evaluate_topk",
    "expand_queries",
    "format_table",
    "k_reciprocal_rerank",
]
