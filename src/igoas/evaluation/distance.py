"""Query-to-gallery distances, computed block by block so callers never need the full matrix."""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from igoas.evaluation.arrays import ArrayLike, as_feature_pair, as_features, rows_per_block
from igoas.utils.errors import IgoasError

DistanceToGallery = Callable[[torch.Tensor], torch.Tensor]


def squared_euclidean(
    queries: torch.Tensor, gallery: torch.Tensor, gallery_norms: torch.Tensor | None = None
) -> torch.Tensor:
    """||q - g||^2 via the matmul expansion (what torchreid ranks by), clamped at 0 against rounding.

    `gallery_norms` (squared row norms) can be passed in when many query blocks share a gallery.
    """
    distances = squared_distance_minus_query_norm(queries, gallery, gallery_norms)
    return distances.add_(queries.pow(2).sum(1, keepdim=True)).clamp_min_(0)


def squared_distance_minus_query_norm(
    queries: torch.Tensor, gallery: torch.Tensor, gallery_norms: torch.Tensor | None = None
) -> torch.Tensor:
    """||g||^2 - 2 q.g: ranks each query's row like the squared distance, one pass cheaper."""
    if gallery_norms is None:
        gallery_norms = gallery.pow(2).sum(1)
    # addmm folds the gallery norms into the matmul's accumulator.
    return torch.addmm(gallery_norms[None, :], queries, gallery.T, beta=1, alpha=-2)


def _euclidean_to(gallery: torch.Tensor) -> DistanceToGallery:
    norms = gallery.pow(2).sum(1)
    return lambda queries: squared_euclidean(queries, gallery, norms)


def _cosine_to(gallery: torch.Tensor) -> DistanceToGallery:
    """1 - cosine similarity; features are already L2-normalised by the metric's `prepare`."""
    return lambda queries: torch.mm(queries, gallery.T).neg_().add_(1)


def _unchanged(features: torch.Tensor) -> torch.Tensor:
    return features


def _l2_normalise(features: torch.Tensor) -> torch.Tensor:
    return F.normalize(features, dim=1)


class Metric(NamedTuple):
    """`prepare` runs once per feature set; `to_gallery(gallery)` does the gallery-side work
    once and returns the function that maps each block of queries to its distances."""

    prepare: Callable[[torch.Tensor], torch.Tensor]
    to_gallery: Callable[[torch.Tensor], DistanceToGallery]


METRICS: dict[str, Metric] = {
    "euclidean": Metric(prepare=_unchanged, to_gallery=_euclidean_to),
    "cosine": Metric(prepare=_l2_normalise, to_gallery=_cosine_to),
}


def get_metric(name: str) -> Metric:
    """The metric called `name`, with a clear error listing the choices."""
    try:
        return METRICS[name]
    except KeyError:
        raise IgoasError(f"unknown distance metric {name!r}; choose one of {sorted(METRICS)}") from None


METRIC_LABELS: dict[str, str] = {
    "euclidean": "squared Euclidean distance (0 to 4 on unit embeddings)",
    "cosine": "cosine distance (1 - cosine similarity, 0 to 2)",
}


def metric_label(name: str) -> str:
    """What a distance of metric `name` is, in words, so every displayed number can name its scale."""
    get_metric(name)
    return METRIC_LABELS[name]


def distance_from_similarity(similarity: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """The `metric` distance of unit-length rows from their inner product (what a FAISS index
    returns), so an index search reports the same number as `compute_distance`:
    ||q - g||^2 = 2 - 2 q.g for "euclidean", 1 - q.g for "cosine"."""
    get_metric(metric)
    similarity = np.asarray(similarity, dtype=np.float32)
    distance = 2.0 - 2.0 * similarity if metric == "euclidean" else 1.0 - similarity
    return np.clip(distance, 0.0, None).astype(np.float32)


def compute_distance(
    qf: ArrayLike, gf: ArrayLike, metric: str = "euclidean", chunk_size: int | None = None
) -> ArrayLike:
    """Full num_query x num_gallery distance matrix (squared Euclidean or 1 - cosine).

    Returns a tensor on the features' device when `qf` is a tensor, a numpy array otherwise.
    For large problems prefer `evaluate_features`, which never materialises this matrix.
    """
    chosen = get_metric(metric)
    queries, gallery = (chosen.prepare(f) for f in as_feature_pair(qf, gf))
    out = torch.empty(queries.shape[0], gallery.shape[0], dtype=queries.dtype, device=queries.device)
    distance_to_gallery = chosen.to_gallery(gallery)
    step = rows_per_block(gallery.shape[0], chunk_size)
    for start in range(0, queries.shape[0], step):
        out[start : start + step] = distance_to_gallery(queries[start : start + step])
    return out if isinstance(qf, torch.Tensor) else out.numpy()


def average_flip_features(f: ArrayLike, f_flipped: ArrayLike, parts: int = 1, normalize: bool = True) -> ArrayLike:
    """Mean of the features of an image and of its mirror image.

    The mean of two unit vectors is shorter than one, so with `normalize` each of `parts`
    equal slices is L2-normalised again (IGOAS embeddings: `parts=2`, one per branch),
    keeping the result on the same scale as a single forward pass.
    """
    a, b = as_features(f, "f"), as_features(f_flipped, "f_flipped")
    if a.shape != b.shape:
        raise IgoasError(f"f has shape {tuple(a.shape)} but f_flipped has {tuple(b.shape)}; they must match")
    if parts < 1 or a.shape[1] % parts:
        raise IgoasError(f"cannot split {a.shape[1]}-d features into {parts} equal parts")
    mean = (a + b.to(a.device)) / 2
    if normalize:
        mean = F.normalize(mean.reshape(a.shape[0], parts, -1), dim=2).reshape(a.shape)
    return mean if isinstance(f, torch.Tensor) else mean.numpy()

