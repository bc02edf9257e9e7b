"""evaluate_topk: metrics from top-k search lists, checked against evaluate_rank on the full
matrix and against per-query counts computed here independently."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from igoas.evaluation import TopKResult, evaluate_rank, evaluate_topk, format_table
from igoas.utils.errors import IgoasError

TOL = 1e-9


def top_k(distmat: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first k entries of each row's stable ranking (distance, then gallery index)."""
    order = np.argsort(distmat, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(distmat, order, axis=1)


def true_matches(q_pid, q_cam, g_pids, g_camids) -> np.ndarray:
    """The protocol's true matches of one query: same identity, other camera, not junk."""
    return (g_pids == q_pid) & (g_camids != q_cam) & (q_pid != -1)


def incomplete_queries(distmat, k, q_pids, q_camids, g_pids, g_camids) -> list[int]:
    """Valid queries with a true match beyond the first k of their full ranking: one loop per query."""
    found = []
    for q in range(distmat.shape[0]):
        true = true_matches(q_pids[q], q_camids[q], g_pids, g_camids)
        listed = np.argsort(distmat[q], kind="stable")[:k]
        if true.any() and true[listed].sum() < true.sum():
            found.append(q)
    return found


def assert_equal_to_exhaustive(result: TopKResult, exhaustive) -> None:
    np.testing.assert_allclose(result.cmc, exhaustive.cmc, atol=TOL, rtol=0)
    assert abs(result.mAP - exhaustive.mAP) <= TOL and abs(result.mINP - exhaustive.mINP) <= TOL
    assert abs(result.mAP_upper - exhaustive.mAP) <= TOL and abs(result.mINP_upper - exhaustive.mINP) <= TOL
    assert (result.num_valid_queries, result.num_skipped_queries) == (
        exhaustive.num_valid_queries, exhaustive.num_skipped_queries)


@st.composite
def problems(draw):
    """Small problems full of ties, junk ids and shared cameras, and a list length k (0 to all)."""
    num_query, num_gallery = draw(st.integers(1, 12)), draw(st.integers(1, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    distinct = draw(st.sampled_from([2, 5, 1000]))
    distmat = rng.integers(0, distinct, (num_query, num_gallery)).astype(np.float64)
    num_ids = draw(st.integers(1, 5))
    ids = (rng.integers(-1, num_ids, num_query), rng.integers(0, 3, num_query),
           rng.integers(-1, num_ids, num_gallery), rng.integers(0, 3, num_gallery))
    k = draw(st.integers(0, num_gallery))
    return distmat, ids, k, draw(st.integers(1, 35))


@settings(max_examples=250, deadline=None)
@given(problem=problems(), chunk_size=st.integers(1, 5))
def test_topk_against_exhaustive_and_an_independent_count(problem, chunk_size):
    distmat, (q_pids, q_camids, g_pids, g_camids), k, max_rank = problem
    indices, distances = top_k(distmat, k)
    try:
        exhaustive = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    except IgoasError:
        with pytest.raises(IgoasError, match="true match"):
            evaluate_topk(indices, distances, q_pids, g_pids, q_camids, g_camids, max_rank, chunk_size)
        return
    result = evaluate_topk(indices, distances, q_pids, g_pids, q_camids, g_camids, max_rank, chunk_size)
    expected = incomplete_queries(distmat, k, q_pids, q_camids, g_pids, g_camids)
    assert result.incomplete_queries.tolist() == expected
    assert result.num_incomplete == len(expected) and result.exact == (not expected)
    if result.exact:
        assert_equal_to_exhaustive(result, exhaustive)
        assert result.cmc_exact_ranks == max_rank and result.num_missing_matches == 0
        return
    # Lower bounds, upper bounds, and an exact CMC head.
    assert result.mAP <= exhaustive.mAP + TOL <= result.mAP_upper + 2 * TOL
    assert result.mINP <= exhaustive.mINP + TOL <= result.mINP_upper + 2 * TOL
    assert np.all(result.cmc <= exhaustive.cmc + TOL)
    np.testing.assert_allclose(result.cmc[: result.cmc_exact_ranks], exhaustive.cmc[: result.cmc_exact_ranks],
                               atol=TOL, rtol=0)
    assert result.num_missing_matches >= result.num_incomplete


def _features(seed: int, num_query: int = 60, num_gallery: int = 300, dim: int = 16):
    """Continuous features with planted identities, junk gallery entries and shared cameras."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, dim))
    q_pids, g_pids = rng.integers(0, 10, num_query), rng.integers(-1, 10, num_gallery)
    qf = centres[q_pids] + rng.normal(size=(num_query, dim))
    gf = centres[g_pids] + rng.normal(size=(num_gallery, dim))
    return qf, gf, q_pids, rng.integers(0, 3, num_query), g_pids, rng.integers(0, 3, num_gallery)


def _squared_euclidean(qf: np.ndarray, gf: np.ndarray) -> np.ndarray:
    return ((qf[:, None, :] - gf[None, :, :]) ** 2).sum(-1)


@pytest.mark.parametrize("as_torch", [False, True])
def test_whole_gallery_lists_equal_evaluate_rank(as_torch):
    qf, gf, q_pids, q_camids, g_pids, g_camids = _features(0)
    distmat = _squared_euclidean(qf, gf)
    indices, distances = top_k(distmat, distmat.shape[1])
    if as_torch:
        indices, distances = torch.from_numpy(indices), torch.from_numpy(distances)
    result = evaluate_topk(indices, distances, q_pids, g_pids, q_camids, g_camids, max_rank=50, chunk_size=7)
    assert result.exact and result.num_incomplete == 0 and len(result.incomplete_queries) == 0
    assert (g_pids == -1).any() and (q_camids[:, None] == g_camids[None, :]).any()  # junk and same camera present
    assert_equal_to_exhaustive(result, evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, 50))


def test_short_lists_holding_every_true_match_are_exact():
    qf, gf, q_pids, q_camids, g_pids, g_camids = _features(1)
    distmat = _squared_euclidean(qf, gf)
    # Pull every true match ahead of all other entries: then the shortest list holding them
    # all is the largest count of true matches plus the excluded entries ranked among them.
    true = np.stack([true_matches(p, c, g_pids, g_camids) for p, c in zip(q_pids, q_camids)])
    distmat = np.where(true, distmat, distmat + 1000.0)
    ranked_true = np.take_along_axis(true, np.argsort(distmat, axis=1, kind="stable"), axis=1)
    k = int(max(np.flatnonzero(row).max() + 1 for row in ranked_true if row.any()))
    assert k < distmat.shape[1] // 2
    result = evaluate_topk(*top_k(distmat, k), q_pids, g_pids, q_camids, g_camids, max_rank=k)
    assert result.exact and result.num_incomplete == 0
    assert_equal_to_exhaustive(result, evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, k))
    shorter = evaluate_topk(*top_k(distmat, k - 1), q_pids, g_pids, q_camids, g_camids, max_rank=k)
    assert not shorter.exact and shorter.num_incomplete >= 1


def test_too_short_lists_report_incomplete_queries_and_lower_bounds():
    qf, gf, q_pids, q_camids, g_pids, g_camids = _features(2)
    distmat = _squared_euclidean(qf, gf)
    exhaustive = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, 10)
    result = evaluate_topk(*top_k(distmat, 10), q_pids, g_pids, q_camids, g_camids, max_rank=10)
    expected = incomplete_queries(distmat, 10, q_pids, q_camids, g_pids, g_camids)
    assert not result.exact and result.num_incomplete == len(expected) > 0
    assert result.incomplete_queries.tolist() == expected
    assert result.mAP < exhaustive.mAP < result.mAP_upper
    assert result.mINP <= exhaustive.mINP <= result.mINP_upper
    listed = sum(true_matches(q_pids[q], q_camids[q], g_pids, g_camids)[top_k(distmat, 10)[0][q]].sum()
                 for q in range(len(q_pids)))
    total = sum(true_matches(p, c, g_pids, g_camids).sum() for p, c in zip(q_pids, q_camids))
    assert result.num_missing_matches == total - listed
    summary = result.to_dict()
    assert summary["exact"] is False and summary["num_incomplete"] == len(expected)


def test_hand_computed_lower_and_upper_bounds():
    # One query (id 1, cam 0), three true matches at exhaustive kept ranks 1, 3 and 4; the list
    # shows g0 (miss), g1 (hit), g3 (same camera, dropped): one match seen, two missing.
    g_pids, g_camids = np.array([2, 1, 2, 1, 1, 1]), np.array([1, 1, 1, 0, 2, 1])
    distmat = np.array([[0.1, 0.2, 0.4, 0.3, 0.5, 0.6]])
    result = evaluate_topk(*top_k(distmat, 3), [1], g_pids, [0], g_camids, max_rank=4)
    assert result.num_incomplete == 1 and result.num_missing_matches == 2 and result.cmc_exact_ranks == 4
    assert result.mAP == pytest.approx((1 / 2) / 3)
    assert result.mAP_upper == pytest.approx((1 / 2 + 2 / 3 + 3 / 4) / 3)  # missing matches at kept ranks 2, 3
    assert result.mINP == 0 and result.mINP_upper == pytest.approx(3 / 4)
    exhaustive = evaluate_rank(distmat, [1], g_pids, [0], g_camids, 4)
    assert exhaustive.mAP == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 3)
    np.testing.assert_allclose(result.cmc, exhaustive.cmc)


def test_k_equal_to_max_rank_does_not_make_the_cmc_tail_exact():
    # Query 1 (id 3, cam 0): its list of k = max_rank = 3 holds a same-camera entry (g2) and
    # a junk one (g3), so only one kept entry is listed and its first match is unlisted.
    g_pids, g_camids = np.array([1, 2, 3, -1, 3, 4]), np.array([1, 1, 0, 1, 1, 1])
    distmat = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.3, 0.1, 0.2, 0.25, 0.7, 0.8]])
    result = evaluate_topk(*top_k(distmat, 3), [1, 3], g_pids, [0, 0], g_camids, max_rank=3)
    exhaustive = evaluate_rank(distmat, [1, 3], g_pids, [0, 0], g_camids, 3)
    assert result.incomplete_queries.tolist() == [1] and result.cmc_exact_ranks == 1
    np.testing.assert_allclose(result.cmc, [0.5, 0.5, 0.5])
    np.testing.assert_allclose(exhaustive.cmc, [0.5, 0.5, 1.0])  # query 1's match is at kept rank 2
    assert "R1" in format_table({"top-k": result}) and result.table("top-k").count("\n") >= 1


def test_tie_order_within_a_list_does_not_matter():
    distmat = np.array([[1.0, 0.0, 1.0, 1.0, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    q_pids, q_camids, g_pids, g_camids = [0, 1], [0, 0], np.array([1, 2, 0, 1, 0]), np.array([1, 1, 1, 1, 1])
    indices, distances = top_k(distmat, 5)
    reversed_ties = np.array([np.lexsort((-row_idx, row_d)) for row_idx, row_d in zip(indices, distances)])
    shuffled = np.take_along_axis(indices, reversed_ties, 1), np.take_along_axis(distances, reversed_ties, 1)
    assert not np.array_equal(shuffled[0], indices)
    result = evaluate_topk(*shuffled, q_pids, g_pids, q_camids, g_camids, max_rank=5)
    assert_equal_to_exhaustive(result, evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, 5))


@pytest.mark.parametrize("pad_distance", [np.inf, 3.4028235e38, np.nan, -1.0])
def test_faiss_style_padding_is_ignored(pad_distance):
    qf, gf, q_pids, q_camids, g_pids, g_camids = _features(3, num_query=20, num_gallery=40)
    distmat = _squared_euclidean(qf, gf)
    indices, distances = top_k(distmat, 40)
    # Rows of different lengths: query q keeps its first 40 - q entries, the rest is padding.
    keep = np.arange(40)[None, :] < (40 - np.arange(20))[:, None]
    padded_idx, padded_d = np.where(keep, indices, -1), np.where(keep, distances, pad_distance)
    result = evaluate_topk(padded_idx, padded_d, q_pids, g_pids, q_camids, g_camids, max_rank=20)
    truncated = [q for q in range(20) if q in incomplete_queries(distmat, 40 - q, q_pids, q_camids, g_pids, g_camids)]
    assert result.incomplete_queries.tolist() == truncated
    full = evaluate_topk(padded_idx[:1], padded_d[:1], q_pids[:1], g_pids, q_camids[:1], g_camids, max_rank=20)
    assert full.exact  # row 0 is complete: padding alone makes nothing incomplete


@pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss is not installed")
def test_faiss_flat_search_feeds_in():
    faiss = pytest.importorskip("faiss")
    qf, gf, q_pids, q_camids, g_pids, g_camids = _features(4, num_query=50, num_gallery=120)
    qf, gf = qf.astype(np.float32), gf.astype(np.float32)
    index = faiss.IndexFlatL2(gf.shape[1])
    index.add(gf)
    distances, indices = index.search(qf, 130)  # k beyond the gallery: FAISS pads with -1
    assert (indices[:, -10:] == -1).all()
    result = evaluate_topk(indices, distances, q_pids, g_pids, q_camids, g_camids, max_rank=20)
    exhaustive = evaluate_rank(_squared_euclidean(qf.astype(np.float64), gf.astype(np.float64)),
                               q_pids, g_pids, q_camids, g_camids, 20)
    assert result.exact
    # FAISS's float32 distances may swap near-equal neighbours; the rankings agree closely.
    assert abs(result.mAP - exhaustive.mAP) < 1e-3 and abs(result.rank(1) - exhaustive.rank(1)) < 1e-2
    # Ranked exactly as FAISS listed them, the exhaustive metrics are the same to 1e-9.
    exact_ranking = evaluate_rank(_rank_matrix(indices, gf.shape[0]), q_pids, g_pids, q_camids, g_camids, 20)
    assert_equal_to_exhaustive(result, exact_ranking)
    short = evaluate_topk(*index.search(qf, 5)[::-1], q_pids, g_pids, q_camids, g_camids, max_rank=5)
    assert not short.exact and short.mAP <= result.mAP


def _rank_matrix(indices: np.ndarray, num_gallery: int) -> np.ndarray:
    """A distance matrix whose stable ranking is the search's own order (position in its list)."""
    ranks = np.empty((indices.shape[0], num_gallery))
    rows = np.repeat(np.arange(indices.shape[0]), (indices >= 0).sum(1))
    ranks[rows, indices[indices >= 0]] = np.tile(np.arange(indices.shape[1]), indices.shape[0])[
        (indices >= 0).ravel()]
    return ranks


def test_a_gallery_too_large_for_a_dense_matrix():
    # 50,000 queries x 1,000,000 gallery entries: a dense boolean matrix alone would be 50 GB.
    num_query, num_gallery, k = 50_000, 1_000_000, 8
    g_pids, g_camids = np.arange(num_gallery) // 20, np.arange(num_gallery) % 2
    q_pids, q_camids = np.arange(num_query), np.zeros(num_query, dtype=np.int64)
    # Query q (camera 0) has 10 true matches, the odd entries of 20q..20q+19; its list shows 8 of them.
    odd = 20 * q_pids[:, None] + 2 * np.arange(k)[None, :] + 1
    result = evaluate_topk(odd, np.tile(np.arange(k, dtype=np.float32), (num_query, 1)), q_pids, g_pids,
                           q_camids, g_camids, max_rank=5)
    assert result.num_incomplete == num_query and result.num_missing_matches == 2 * num_query
    assert result.rank(1) == 1.0 and result.mAP == pytest.approx(0.8) and result.mAP_upper == pytest.approx(1.0)


def test_bad_input_raises_clear_errors():
    ids = {"q_pids": [0, 1], "q_camids": [0, 0], "g_pids": [0, 1, 1], "g_camids": [1, 1, 1]}
    good_idx, good_d = np.array([[0, 1], [1, 2]]), np.array([[0.1, 0.2], [0.1, 0.3]])
    cases = [
        (np.array([0, 1]), good_d, ids, "indices: expected a 2-D"),
        (good_idx.astype(float), good_d, ids, "integer"),
        (good_idx, good_d[:, :1], ids, r"distances: expected shape \(2, 2\)"),
        (good_idx, good_d, {**ids, "q_pids": [0]}, "q_pids: expected 2"),
        (good_idx, good_d, {**ids, "q_camids": [0, 0, 0]}, "q_camids: expected 2"),
        (good_idx, good_d, {**ids, "g_camids": [1, 1]}, "g_camids: expected 3"),
        (good_idx, np.array([[0.1, np.nan], [0.1, 0.3]]), ids, "NaN"),
        (good_idx, np.array([[0.1, np.inf], [0.1, 0.3]]), ids, "Inf"),
        (np.array([[0, 3], [1, 2]]), good_d, ids, r"indices\[0, 1\] = 3 is outside the gallery"),
        (np.array([[0, 1], [-2, 2]]), good_d, ids, r"indices\[1, 0\] = -2"),
        (good_idx, np.array([[0.1, 0.2], [0.3, 0.1]]), ids, "row 1 is not ascending"),
        (np.array([[0, 0], [1, 2]]), good_d, ids, "appears twice"),
        (np.array([[-1, 1], [1, 2]]), good_d, ids, "precedes a found one"),
    ]
    for indices, distances, kwargs, message in cases:
        with pytest.raises(IgoasError, match=message):
            evaluate_topk(indices, distances, **kwargs)
    with pytest.raises(IgoasError, match="max_rank"):
        evaluate_topk(good_idx, good_d, **ids, max_rank=0)
    with pytest.raises(IgoasError, match="true match"):
        evaluate_topk(good_idx, good_d, [5, 5], [0, 1, 1], [0, 0], [1, 1, 1])
