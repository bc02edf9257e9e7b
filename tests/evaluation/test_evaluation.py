"""CMC/mAP/mINP, distances, query expansion and result formatting of igoas.evaluation."""
from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from igoas.utils.errors import IgoasError
from igoas.evaluation import (RankResult, average_flip_features, compute_distance, evaluate_features, evaluate_rank,
                              expand_queries, format_table)
from igoas.evaluation import distance as distance_module
from igoas.evaluation import rank as rank_module


def reference_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """Plain per-query loop with torchreid's Python-evaluator semantics, junk removal and mINP.

    Ties: stable argsort. CMC: each query's cumulative hit vector, cut at max_rank and, when
    fewer entries remain, padded with its last value. Returns None when no query is valid.
    """
    cmcs, aps, inps = [], [], []
    skipped = 0
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        same = (g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i])
        keep = ~same & (g_pids[order] != -1)
        hits = (g_pids[order][keep] == q_pids[i]).astype(np.int64)
        if not hits.any():
            skipped += 1
            continue
        cmc = np.minimum(hits.cumsum(), 1)[:max_rank]
        cmc = np.pad(cmc, (0, max_rank - len(cmc)), mode="edge")
        cmcs.append(cmc)
        positions = np.flatnonzero(hits)
        aps.append(np.mean(np.arange(1, len(positions) + 1) / (positions + 1)))
        inps.append(len(positions) / (positions[-1] + 1))
    if not aps:
        return None
    return np.mean(cmcs, axis=0), float(np.mean(aps)), float(np.mean(inps)), len(aps), skipped


def assert_matches_reference(result: RankResult, expected) -> None:
    cmc, mAP, mINP, valid, skipped = expected
    np.testing.assert_allclose(result.cmc, cmc, atol=1e-6, rtol=0)
    assert abs(result.mAP - mAP) <= 1e-6
    assert abs(result.mINP - mINP) <= 1e-6
    assert (result.num_valid_queries, result.num_skipped_queries) == (valid, skipped)


@st.composite
def ranking_problems(draw):
    """Small problems full of ties (few distinct distances), junk ids and shared cameras."""
    num_query = draw(st.integers(1, 12))
    num_gallery = draw(st.integers(1, 30))
    seed = draw(st.integers(0, 2**32 - 1))
    distinct = draw(st.sampled_from([2, 5, 1000]))
    rng = np.random.default_rng(seed)
    distmat = rng.integers(0, distinct, (num_query, num_gallery)).astype(np.float32)
    num_ids = draw(st.integers(1, 5))
    q_pids = rng.integers(-1, num_ids, num_query)
    g_pids = rng.integers(-1, num_ids, num_gallery)
    q_camids = rng.integers(0, 3, num_query)
    g_camids = rng.integers(0, 3, num_gallery)
    max_rank = draw(st.integers(1, 40))
    return distmat, q_pids, g_pids, q_camids, g_camids, max_rank


# DENSE_FRACTION 0 forces the sparse candidate path, a huge value the whole-row sort.
@pytest.mark.parametrize("dense_fraction", [0, 4, 10**9])
@settings(max_examples=80, deadline=None)
@given(problem=ranking_problems(), chunk_size=st.integers(1, 8))
def test_evaluate_rank_equals_per_query_loop(problem, chunk_size, dense_fraction):
    expected = reference_rank(*problem)
    with mock.patch.object(rank_module, "DENSE_FRACTION", dense_fraction):
        if expected is None:
            with pytest.raises(IgoasError, match="true match"):
                evaluate_rank(*problem, chunk_size=chunk_size)
            return
        result = evaluate_rank(*problem, chunk_size=chunk_size)
    assert result.cmc.shape == (problem[-1],)
    assert_matches_reference(result, expected)


def test_evaluate_rank_hand_computed_example():
    # Query 0 (id 1, cam 0). Gallery order by distance: g3 (id 1, cam 0: same camera, dropped),
    # g0 (id 2), g4 (id -1: junk, dropped), g1 (id 1, cam 1: hit), g2 (id 3), g5 (id 1: hit).
    # Kept ranking: [miss, hit, miss, hit] -> AP = (1/2 + 2/4) / 2, mINP = 2/4, first hit at rank 2.
    distmat = np.array([[0.2, 0.5, 0.6, 0.1, 0.3, 0.9]])
    result = evaluate_rank(distmat, np.array([1]), np.array([2, 1, 3, 1, -1, 1]), np.array([0]),
                           np.array([1, 1, 1, 0, 1, 2]), max_rank=5)
    np.testing.assert_allclose(result.cmc, [0, 1, 1, 1, 1])
    assert result.mAP == pytest.approx(0.5)
    assert result.mINP == pytest.approx(0.5)


def test_equal_distances_rank_by_gallery_index():
    # All distances equal: the stable order puts the earlier gallery entry first.
    pids = np.array([0, 1, 0])
    first_wins = evaluate_rank(np.zeros((1, 3)), [1], pids, [0], [1, 1, 1], max_rank=3)
    assert first_wins.cmc[0] == 0 and first_wins.cmc[1] == 1
    assert first_wins.mAP == pytest.approx(0.5)


def test_max_rank_beyond_gallery_keeps_final_value():
    # Query 0 finds its match second, query 1 first; only two gallery entries exist.
    distmat = np.array([[0.1, 0.3], [0.2, 0.4]])
    result = evaluate_rank(distmat, [0, 1], [1, 0], [0, 0], [1, 1], max_rank=50)
    assert result.cmc.shape == (50,)
    assert result.cmc[0] == pytest.approx(0.5)
    np.testing.assert_allclose(result.cmc[1:], 1.0)


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(IgoasError, match="q_pids"):
        evaluate_rank(np.zeros((2, 3)), [0], [0, 1, 2], [0, 0], [1, 1, 1])
    with pytest.raises(IgoasError, match="NaN"):
        evaluate_rank(np.full((1, 2), np.nan), [0], [0, 1], [0], [1, 1])
    with pytest.raises(IgoasError, match="max_rank"):
        evaluate_rank(np.zeros((1, 2)), [0], [0, 1], [0], [1, 1], max_rank=0)
    with pytest.raises(IgoasError, match="metric"):
        evaluate_features(np.zeros((1, 2)), np.zeros((2, 2)), [0], [0, 1], [0], [1, 1], metric="manhattan")
    with pytest.raises(IgoasError, match="features"):
        evaluate_features(np.zeros((1, 2)), np.zeros((2, 3)), [0], [0, 1], [0], [1, 1])


def _features(seed: int, num_query: int = 40, num_gallery: int = 90, dim: int = 16):
    """Continuous features with planted identities (no exact ties) and their ids and cameras."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, dim))
    q_pids, g_pids = rng.integers(0, 8, num_query), rng.integers(-1, 8, num_gallery)
    qf = (centres[q_pids] + rng.normal(size=(num_query, dim))).astype(np.float32)
    gf = (centres[g_pids] + rng.normal(size=(num_gallery, dim))).astype(np.float32)
    return qf, gf, q_pids, g_pids, rng.integers(0, 3, num_query), rng.integers(0, 3, num_gallery)


def test_compute_distance_matches_definitions():
    qf, gf, *_ = _features(0)
    squared = ((qf[:, None, :].astype(np.float64) - gf[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(compute_distance(qf, gf, "euclidean"), squared, rtol=1e-4, atol=1e-4)
    unit_q = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    unit_g = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    np.testing.assert_allclose(compute_distance(qf, gf, "cosine", chunk_size=7), 1 - unit_q @ unit_g.T, atol=1e-5)
    as_tensor = compute_distance(torch.from_numpy(qf), torch.from_numpy(gf))
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.shape == (40, 90)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_evaluate_features_equals_evaluate_rank_on_full_matrix(metric, chunk_size):
    qf, gf, q_pids, g_pids, q_camids, g_camids = _features(1)
    expected = reference_rank(compute_distance(qf, gf, metric), q_pids, g_pids, q_camids, g_camids, 50)
    result = evaluate_features(torch.from_numpy(qf), gf, q_pids, torch.from_numpy(g_pids), q_camids, g_camids,
                               metric=metric, chunk_size=chunk_size)
    assert_matches_reference(result, expected)


def test_mixed_precision_inputs_are_promoted():
    qf, gf, q_pids, g_pids, q_camids, g_camids = _features(5)
    expected = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids)
    mixed = evaluate_features(torch.from_numpy(qf).half(), gf.astype(np.float64), q_pids, g_pids, q_camids, g_camids)
    assert abs(mixed.mAP - expected.mAP) < 0.02  # half-precision queries: close, not bit-equal
    assert compute_distance(qf, gf.astype(np.float64)).dtype == np.float64


def test_evaluate_features_never_builds_more_than_a_block():
    qf, gf, q_pids, g_pids, q_camids, g_camids = _features(2)
    shapes = []
    original = distance_module.METRICS["euclidean"]

    def recording_to(gallery):
        distance_to_gallery = original.to_gallery(gallery)

        def recording(queries):
            shapes.append(tuple(queries.shape))
            return distance_to_gallery(queries)

        return recording

    patched = {**distance_module.METRICS, "euclidean": original._replace(to_gallery=recording_to)}
    with mock.patch.object(distance_module, "METRICS", patched):
        evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, chunk_size=6)
    assert shapes and max(rows for rows, _ in shapes) <= 6
    assert sum(rows for rows, _ in shapes) == len(qf)


@pytest.mark.parametrize("alpha", [0.0, 3.0])
def test_query_expansion_is_weighted_mean_of_nearest_gallery(alpha):
    qf, gf, q_pids, g_pids, q_camids, g_camids = _features(3)
    top_k = 4
    distances = compute_distance(qf, gf)
    expected = np.empty_like(qf)
    for i, query in enumerate(qf):
        nearest = np.argsort(distances[i], kind="stable")[:top_k]
        unit_neighbours = gf[nearest] / np.linalg.norm(gf[nearest], axis=1, keepdims=True)
        similarity = unit_neighbours @ (query / np.linalg.norm(query))
        weights = np.concatenate([[1.0], np.clip(similarity, 0, None) ** alpha if alpha else np.ones(top_k)])
        expected[i] = (weights[:, None] * np.vstack([query, gf[nearest]])).sum(0) / weights.sum()
    np.testing.assert_allclose(expand_queries(qf, gf, top_k, alpha, chunk_size=9), expected, rtol=1e-4, atol=1e-5)
    result = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, query_expansion=top_k,
                               query_expansion_alpha=alpha)
    assert_matches_reference(result, reference_rank(compute_distance(expected, gf), q_pids, g_pids, q_camids,
                                                    g_camids, 50))


def test_average_flip_features_normalises_each_part():
    rng = np.random.default_rng(4)
    f, flipped = rng.normal(size=(5, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)
    averaged = average_flip_features(f, flipped, parts=2)
    halves = averaged.reshape(5, 2, 4)
    np.testing.assert_allclose(np.linalg.norm(halves, axis=2), 1.0, rtol=1e-5)
    mean = ((f + flipped) / 2).reshape(5, 2, 4)
    np.testing.assert_allclose(halves, mean / np.linalg.norm(mean, axis=2, keepdims=True), rtol=1e-5)
    raw = average_flip_features(torch.from_numpy(f), torch.from_numpy(flipped), normalize=False)
    assert isinstance(raw, torch.Tensor)
    np.testing.assert_allclose(raw.numpy(), (f + flipped) / 2, rtol=1e-6)
    with pytest.raises(IgoasError, match="parts"):
        average_flip_features(f, flipped, parts=3)


def test_result_dict_is_json_percent_and_table_lists_rows():
    result = RankResult(cmc=np.linspace(0.5, 1.0, 12), mAP=0.25, mINP=0.125, num_valid_queries=9,
                        num_skipped_queries=1)
    summary = json.loads(json.dumps(result.to_dict()))
    assert summary["R1"] == pytest.approx(50.0) and summary["mAP"] == pytest.approx(25.0)
    assert summary["mINP"] == pytest.approx(12.5) and summary["num_skipped_queries"] == 1
    assert summary["R10"] == pytest.approx(100 * result.cmc[9]) and len(summary["cmc"]) == 12
    short = RankResult(cmc=np.array([0.5, 0.7]), mAP=0.4, mINP=0.3, num_valid_queries=2, num_skipped_queries=0)
    assert "R5" not in short.to_dict()
    table = format_table({"occluded": result, "holistic": short})
    lines = table.splitlines()
    assert lines[0].split() == ["query", "set", "R1", "R5", "R10", "mAP", "mINP"]
    assert lines[1].split()[:2] == ["occluded", "50.0"] and lines[2].split()[2] == "-"
    assert "1 queries" in table
    assert "25.0" in result.table("run")


@pytest.mark.parametrize("rerank", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_tpr_at_fpr_is_the_roc_of_the_ranked_distances(rerank, chunk_size):
    from igoas.evaluation import k_reciprocal_rerank
    from igoas.evaluation.verification import pair_distances, roc_curve

    qf, gf, q_pids, g_pids, q_camids, g_camids = _features(3)
    fprs = (0.01, 0.1, 0.5)
    result = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, metric="cosine", rerank=rerank,
                               chunk_size=chunk_size, fprs=fprs)
    distances = compute_distance(qf, gf, "cosine")
    if rerank:
        distances = k_reciprocal_rerank(qf / np.linalg.norm(qf, axis=1, keepdims=True),
                                        gf / np.linalg.norm(gf, axis=1, keepdims=True))
    expected = roc_curve(*pair_distances(np.asarray(distances), q_pids, g_pids, q_camids, g_camids)).tpr_at_fprs(fprs)
    assert result.tpr_at_fpr.keys() == expected.keys()
    np.testing.assert_allclose(list(result.tpr_at_fpr.values()), list(expected.values()), atol=1e-9)
    assert 0.0 < result.tpr_at_fpr[0.5] <= 1.0
    plain = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, metric="cosine", rerank=rerank,
                              chunk_size=chunk_size)
    assert plain.tpr_at_fpr == {} and plain.mAP == result.mAP, "asking for TPR changes nothing else"
    summary = result.to_dict()
    assert summary["TPR@1e-2"] == pytest.approx(100 * expected[0.01])
    assert format_table({"q": result}).splitlines()[0].split()[-3:] == ["TPR@1e-2", "TPR@1e-1", "TPR@5e-1"]
