"""k-reciprocal re-ranking and the stable top-k it relies on, against plain dense references."""
from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from igoas.utils.errors import IgoasError
from igoas.evaluation import evaluate_features, evaluate_rank, k_reciprocal_rerank
from igoas.evaluation import rerank as rerank_module
from igoas.evaluation.neighbours import stable_topk


def dense_rerank(qf: np.ndarray, gf: np.ndarray, k1: int, k2: int, lambda_value: float) -> np.ndarray:
    """Zhong et al.'s algorithm written plainly with dense (q+g) x (q+g) matrices.

    Distances are exact squared Euclidean ones (float64, from the differences); each row is
    scaled by its maximum; neighbour lists come from a stable argsort, so equal distances rank
    by index.
    """
    features = np.concatenate([qf, gf]).astype(np.float64)
    total, num_query = len(features), len(qf)
    dist = ((features[:, None, :] - features[None, :, :]) ** 2).sum(2)
    row_max = dist.max(axis=1, keepdims=True)
    dist = dist / np.where(row_max > 0, row_max, 1)
    rank = np.argsort(dist, axis=1, kind="stable")

    def reciprocal(i: int, k: int) -> np.ndarray:
        return np.array([j for j in rank[i, :k] if i in rank[j, :k]], dtype=np.int64)

    half = int(np.around(k1 / 2)) + 1
    encoding = np.zeros((total, total), dtype=np.float32)
    for i in range(total):
        base = reciprocal(i, k1 + 1)
        expanded = set(base.tolist())
        for candidate in base:
            theirs = reciprocal(candidate, half)
            if len(set(theirs.tolist()) & set(base.tolist())) > 2.0 / 3.0 * len(theirs):
                expanded.update(theirs.tolist())
        members = np.array(sorted(expanded), dtype=np.int64)  # empty when duplicates crowd i out
        weights = np.exp(-dist[i, members])
        encoding[i, members] = weights / weights.sum()
    if k2 != 1:
        encoding = np.stack([encoding[rank[i, :k2]].mean(axis=0) for i in range(total)])
    final = np.empty((num_query, total - num_query), dtype=np.float32)
    for i in range(num_query):
        for j in range(num_query, total):
            shared = np.minimum(encoding[i], encoding[j]).sum()
            jaccard = 1 - shared / (2 - shared)
            final[i, j - num_query] = jaccard * (1 - lambda_value) + dist[i, j] * lambda_value
    return final


CASES = [  # (num_query, num_gallery, dim, k1, k2, lambda)
    (5, 30, 8, 20, 6, 0.3),
    (12, 40, 4, 6, 3, 0.5),
    (3, 9, 3, 20, 6, 0.3),  # k1 larger than the whole set
    (8, 25, 6, 5, 1, 0.0),  # no local expansion; pure Jaccard
    (7, 20, 5, 3, 8, 1.0),  # k2 beyond k1 + 1; pure original distance
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("chunk_size", [None, 4])
@pytest.mark.parametrize("stored", [1, 2])  # 1: most encoding distances must be recomputed
def test_matches_dense_reference_on_continuous_features(case, chunk_size, stored, monkeypatch):
    monkeypatch.setattr(rerank_module, "STORED_NEIGHBOURS", stored)
    num_query, num_gallery, dim, k1, k2, lambda_value = case
    rng = np.random.default_rng(num_query * 100 + num_gallery)
    qf = rng.normal(size=(num_query, dim)).astype(np.float32)
    gf = rng.normal(size=(num_gallery, dim)).astype(np.float32)
    result = k_reciprocal_rerank(qf, gf, k1, k2, lambda_value, chunk_size=chunk_size)
    assert result.dtype == np.float32 and result.shape == (num_query, num_gallery)
    # no float32 ties here: the float64 reference and the float32 result agree to rounding
    np.testing.assert_allclose(result, dense_rerank(qf, gf, k1, k2, lambda_value), atol=1e-6, rtol=0)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    num_query=st.integers(1, 8),
    num_gallery=st.integers(1, 24),
    k1=st.integers(1, 12),
    k2=st.integers(1, 7),
    chunk_size=st.sampled_from([None, 1, 5]),
)
def test_matches_dense_reference_with_duplicates_and_ties(seed, num_query, num_gallery, k1, k2, chunk_size):
    # Small integer features: distances are exact in float32, so equal distances (and
    # duplicated images) are real ties that both sides must break by index.
    rng = np.random.default_rng(seed)
    pool = rng.integers(-2, 3, size=(6, 3)).astype(np.float32)
    features = pool[rng.integers(0, len(pool), num_query + num_gallery)]
    qf, gf = features[:num_query], features[num_query:]
    expected = dense_rerank(qf, gf, k1, k2, 0.3)
    np.testing.assert_allclose(k_reciprocal_rerank(qf, gf, k1, k2, 0.3, chunk_size=chunk_size), expected, atol=1e-4)


@pytest.mark.parametrize("spread", [1e-3, 1e-4])
def test_exact_where_float32_rounding_would_swap_neighbours(spread, monkeypatch):
    # Near-duplicate images (a frame and the next one) give distances a few float32 roundings
    # apart: a float32-only ranking orders some of them wrongly and changes whole k-reciprocal
    # sets. Every stage is also split into small blocks, as at Market-1501 scale.
    for name, value in {"SPARSE_ROWS": 7, "JACCARD_PAIRS": 500, "BLOCK_ELEMENTS": 4096}.items():
        monkeypatch.setattr(rerank_module, name, value)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 48))
    features = centres[rng.integers(0, 40, 400)] + spread * rng.normal(size=(400, 48))
    features = (features * 30).astype(np.float32)
    qf, gf = features[:60], features[60:]
    result = k_reciprocal_rerank(qf, gf, chunk_size=50)
    np.testing.assert_allclose(result, dense_rerank(qf, gf, 20, 6, 0.3), atol=1e-5, rtol=0)


def test_distance_blocks_never_span_all_rows():
    rng = np.random.default_rng(5)
    qf, gf = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(30, 4)).astype(np.float32)
    shapes = []
    original = rerank_module.squared_distance_minus_query_norm

    def recording(queries, gallery, gallery_norms=None):
        shapes.append(tuple(queries.shape))
        return original(queries, gallery, gallery_norms)

    with mock.patch.object(rerank_module, "squared_distance_minus_query_norm", recording):
        blocked = k_reciprocal_rerank(qf, gf, chunk_size=5)
    assert max(rows for rows, _ in shapes) <= 5 and sum(rows for rows, _ in shapes) == 36
    np.testing.assert_allclose(blocked, k_reciprocal_rerank(qf, gf), atol=1e-6)


def test_accepts_tensors_and_evaluate_features_uses_it():
    rng = np.random.default_rng(6)
    qf, gf = rng.normal(size=(10, 8)).astype(np.float32), rng.normal(size=(30, 8)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, 4, 10), rng.integers(0, 4, 30)
    q_camids, g_camids = np.zeros(10, dtype=np.int64), np.ones(30, dtype=np.int64)
    from_tensors = k_reciprocal_rerank(torch.from_numpy(qf), torch.from_numpy(gf), 6, 3, 0.3)
    np.testing.assert_allclose(from_tensors, dense_rerank(qf, gf, 6, 3, 0.3), atol=1e-4)
    expected = evaluate_rank(from_tensors, q_pids, g_pids, q_camids, g_camids)
    result = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, rerank=True, rerank_params=(6, 3, 0.3))
    assert result.mAP == pytest.approx(expected.mAP, abs=1e-6)
    np.testing.assert_allclose(result.cmc, expected.cmc, atol=1e-6)
    plain = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids)
    assert result.mAP != plain.mAP  # re-ranking was actually applied


def test_invalid_parameters_raise():
    features = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(IgoasError, match="k1"):
        k_reciprocal_rerank(features, features, k1=0)
    with pytest.raises(IgoasError, match="lambda"):
        k_reciprocal_rerank(features, features, lambda_value=1.5)
    with pytest.raises(IgoasError, match="NaN"):
        k_reciprocal_rerank(np.full((1, 2), np.nan, dtype=np.float32), features)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 6),
    columns=st.integers(1, 40),
    k=st.integers(1, 45),
    distinct=st.sampled_from([1, 3, 1000]),
)
def test_stable_topk_is_prefix_of_stable_argsort(seed, rows, columns, k, distinct):
    values = torch.from_numpy(np.random.default_rng(seed).integers(0, distinct, (rows, columns)).astype(np.float32))
    top_values, top_columns = stable_topk(values, k)
    expected = np.argsort(values.numpy(), axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(top_columns.numpy(), expected)
    np.testing.assert_array_equal(top_values.numpy(), np.take_along_axis(values.numpy(), expected, axis=1))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), columns=st.integers(1, 30), k=st.integers(1, 32))
def test_stable_topk_ranks_by_monotone_key(seed, columns, k):
    # floor(v / 3) + row merges distinct raw values into ties: order must follow the key, then the column.
    values = torch.from_numpy(np.random.default_rng(seed).integers(0, 20, (4, columns)).astype(np.float32))

    def key(v, rows):
        return torch.floor(v / 3) + rows

    top_keys, top_columns = stable_topk(values, k, key=key)
    keys = (np.floor(values.numpy() / 3) + np.arange(4)[:, None]).astype(np.float32)
    expected = np.argsort(keys, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(top_columns.numpy(), expected)
    np.testing.assert_array_equal(top_keys.numpy(), np.take_along_axis(keys, expected, axis=1))


def test_exact_nearest_with_a_crowd_of_equal_distances_at_the_boundary():
    # 30 copies of one point around the k-th place: more ties than the candidate margin holds.
    from igoas.evaluation.neighbours import exact_nearest

    rng = np.random.default_rng(3)
    gallery = torch.from_numpy(np.concatenate([rng.normal(size=(10, 6)) * 0.1,
                                               np.ones((30, 6)), rng.normal(size=(10, 6)) + 5]).astype(np.float32))
    queries = gallery[:4] + 0.01
    norms = gallery.pow(2).sum(1)
    block = torch.addmm(norms[None, :], queries, gallery.T, alpha=-2)
    distances, columns = exact_nearest(block, queries, gallery, norms, 15)
    exact = ((queries.double()[:, None] - gallery.double()[None]) ** 2).sum(2)
    expected = np.argsort(exact.numpy(), axis=1, kind="stable")[:, :15]
    np.testing.assert_array_equal(columns.numpy(), expected)
    np.testing.assert_allclose(distances.numpy(), np.take_along_axis(exact.numpy(), expected, 1), rtol=1e-12)
