"""Features files and the FAISS gallery index: exact search equals brute force, save/load round trips."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from igoas.artifacts.checkpoint import load_checkpoint, save_checkpoint
from igoas.cli import main
from igoas.utils.errors import IgoasError
from igoas.retrieval import Features, GalleryIndex, features_from_arrays, load_features, save_features
from igoas.retrieval.index import metadata_path


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _gallery(count: int = 400, dim: int = 32, seed: int = 0) -> Features:
    rng = np.random.default_rng(seed)
    return features_from_arrays(
        _unit(rng.normal(size=(count, dim))),
        [f"gallery/{i:04d}_c{i % 3 + 1}s1_000000_00.jpg" for i in range(count)],
        pids=rng.integers(0, 50, count),
        camids=rng.integers(0, 3, count),
        checkpoint="model.pth",
    )


def _assert_same_ranking(indices: np.ndarray, scores: np.ndarray, gallery: np.ndarray, queries: np.ndarray) -> None:
    """FAISS order equals the brute-force order; positions may only differ between equal scores."""
    brute_scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    for row in range(len(queries)):
        expected = np.argsort(-brute_scores[row], kind="stable")[: indices.shape[1]]
        np.testing.assert_allclose(scores[row], brute_scores[row, expected], atol=1e-5)
        differ = indices[row] != expected
        # any disagreement must be a tie in exact arithmetic (within float32 summation error)
        assert np.all(np.abs(brute_scores[row, indices[row][differ]] - brute_scores[row, expected[differ]]) < 1e-6)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_features_file_round_trip(tmp_path: Path, suffix: str) -> None:
    features = _gallery(20)
    features.bad_paths = ["broken.jpg"]
    path = save_features(tmp_path / f"gallery{suffix}", features)
    loaded = load_features(path)
    np.testing.assert_array_equal(loaded.embeddings, features.embeddings)
    np.testing.assert_array_equal(loaded.pids, features.pids)
    np.testing.assert_array_equal(loaded.camids, features.camids)
    assert loaded.paths == features.paths and loaded.bad_paths == ["broken.jpg"]
    assert loaded.metadata == {"checkpoint": "model.pth"}


def test_features_file_errors(tmp_path: Path) -> None:
    with pytest.raises(IgoasError, match="unknown features file type"):
        save_features(tmp_path / "gallery.csv", _gallery(3))
    with pytest.raises(IgoasError, match="no such features file"):
        load_features(tmp_path / "absent.npz")
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, embeddings=np.zeros((2, 4)))
    with pytest.raises(IgoasError, match="without igoas metadata"):
        load_features(foreign)
    with pytest.raises(IgoasError, match="embeddings for 3 paths"):
        features_from_arrays(np.zeros((2, 4)), ["a", "b", "c"])


def test_exact_index_equals_brute_force() -> None:
    gallery = _gallery()
    queries = _unit(np.random.default_rng(1).normal(size=(25, gallery.embeddings.shape[1])))
    index = GalleryIndex.build(gallery)
    result = index.search(queries, topk=len(gallery))  # the whole ranking, not just its head
    _assert_same_ranking(result.indices, result.scores, gallery.embeddings, queries)
    assert result.paths[0][0] == gallery.paths[result.indices[0, 0]]
    np.testing.assert_array_equal(result.pids, gallery.pids[result.indices])


def test_exact_index_on_real_embeddings(tiny_checkpoint: Path, synthetic_root: Path) -> None:
    from igoas.data import build_dataset
    from igoas.deploy.inference import ReIDModel

    dataset = build_dataset("synthetic", synthetic_root)
    model = ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32")
    gallery_paths = [s.path for s in dataset.gallery]
    gallery = features_from_arrays(model.embed(gallery_paths), gallery_paths)
    queries = model.embed([s.path for s in dataset.query])
    result = GalleryIndex.build(gallery).search(queries, topk=10)
    _assert_same_ranking(result.indices, result.scores, gallery.embeddings, queries)


def test_unnormalised_features_are_ranked_by_cosine() -> None:
    gallery = _gallery(50)
    scaled = features_from_arrays(gallery.embeddings * np.linspace(0.5, 3, 50, dtype=np.float32)[:, None], gallery.paths)
    queries = _unit(np.random.default_rng(2).normal(size=(5, 32)))
    np.testing.assert_array_equal(
        GalleryIndex.build(scaled).search(queries * 7, 10).indices, GalleryIndex.build(gallery).search(queries, 10).indices
    )


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_and_load_give_identical_results(tmp_path: Path, kind: str) -> None:
    gallery = _gallery(2000, dim=16)
    queries = _unit(np.random.default_rng(3).normal(size=(10, 16)))
    index = GalleryIndex.build(gallery, kind=kind)
    before = index.search(queries, topk=20)
    index.save(tmp_path / "gallery.index")
    loaded = GalleryIndex.load(tmp_path / "gallery.index")
    after = loaded.search(queries, topk=20)
    np.testing.assert_array_equal(after.indices, before.indices)
    np.testing.assert_array_equal(after.scores, before.scores)
    assert after.paths == before.paths and loaded.options == index.options and loaded.kind == kind
    assert loaded.metadata == {"features": {"checkpoint": "model.pth"}}


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_most_true_neighbours(kind: str) -> None:
    gallery = _gallery(2000, dim=16)
    queries = _unit(np.random.default_rng(4).normal(size=(50, 16)))
    exact = GalleryIndex.build(gallery).search(queries, topk=10).indices
    approximate = GalleryIndex.build(gallery, kind=kind).search(queries, topk=10).indices
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approximate, exact)])
    assert recall > 0.9


def test_index_errors(tmp_path: Path) -> None:
    gallery = _gallery(30)
    with pytest.raises(IgoasError, match="unknown index kind"):
        GalleryIndex.build(gallery, kind="lsh")
    with pytest.raises(IgoasError, match="has no option"):
        GalleryIndex.build(gallery, kind="flat", nprobe=4)
    index = GalleryIndex.build(gallery)
    with pytest.raises(IgoasError, match="dimensions"):
        index.search(np.ones((1, 7), np.float32))
    index.save(tmp_path / "a.index")
    GalleryIndex.build(_gallery(31)).save(tmp_path / "b.index")
    metadata_path(tmp_path / "b.index").replace(metadata_path(tmp_path / "a.index"))
    with pytest.raises(IgoasError, match="different builds"):
        GalleryIndex.load(tmp_path / "a.index")
    with pytest.raises(IgoasError, match="missing"):
        GalleryIndex.load(tmp_path / "b.index")


@pytest.mark.slow
def test_search_commands_end_to_end(
    tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from igoas.data import build_dataset

    dataset = build_dataset("synthetic", synthetic_root)
    features = tmp_path / "gallery.safetensors"
    assert main(["extract", str(tiny_checkpoint), str(synthetic_root), "--dataset", "synthetic", "--split", "gallery",
                 "--out", str(features), "--workers", "0", "--no-progress"]) == 0
    assert main(["search", "build", str(features), "--index", str(tmp_path / "gallery.index")]) == 0
    assert json.loads(metadata_path(tmp_path / "gallery.index").read_text())["count"] == len(dataset.gallery)
    capsys.readouterr()
    query = dataset.query[0]
    drawing = tmp_path / "ranked.png"
    assert main(["search", "query", str(tmp_path / "gallery.index"), query.path, "--topk", "3",
                 "--draw", str(drawing)]) == 0
    printed = capsys.readouterr().out
    assert f"query {query.path} (identity {query.pid}, camera c{query.camid + 1})" in printed
    ranked_lines = [line for line in printed.splitlines() if line.strip()[:1].isdigit()]
    assert len(ranked_lines) == 3
    gallery = {s.path: s for s in dataset.gallery}
    assert all(line.split()[-1] in gallery for line in ranked_lines)
    assert all(line.split()[3] == f"c{gallery[line.split()[-1]].camid + 1}" for line in ranked_lines), \
        "cameras are printed as the file names write them"
    distances = [float(line.split()[1]) for line in ranked_lines]
    assert distances == sorted(distances), "distances, nearest first"
    assert drawing.is_file() and drawing.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the same search from saved query features: nothing re-embedded, identity and camera carried through
    queries = tmp_path / "queries.npz"
    assert main(["extract", str(tiny_checkpoint), str(synthetic_root), "--dataset", "synthetic", "--split", "query",
                 "--out", str(queries), "--workers", "0", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["search", "query", str(tmp_path / "gallery.index"), "--features", str(queries), "--topk", "3"]) == 0
    from_features = capsys.readouterr().out
    assert from_features.count("query ") == len(dataset.query)
    block = from_features.split(f"query {query.path} ")[1].splitlines()
    assert block[0] == f"(identity {query.pid}, camera c{query.camid + 1})"
    assert [line.split()[-1] for line in block[2:5]] == [line.split()[-1] for line in ranked_lines]
    np.testing.assert_allclose([float(line.split()[1]) for line in block[2:5]], distances, atol=1e-3)
    first_hits = sum(int(b.splitlines()[2].split()[2]) == int(b.split("identity ")[1].split(",")[0])
                     for b in from_features.split("query ")[1:])
    summary = from_features.rstrip().splitlines()[-1]
    assert summary.startswith(f"searched {len(dataset.query)} queries against {len(dataset.gallery)} gallery "
                              f"embeddings, top 3 each; of the {len(dataset.query)} with a known identity, "
                              f"{first_hits} ("), summary
    assert main(["search", "query", str(tmp_path / "gallery.index"), "--features", str(queries), "--topk", "3",
                 "--summary-only"]) == 0
    assert capsys.readouterr().out.strip() == summary

    other = load_features(queries)
    other.metadata.update(checkpoint="/elsewhere/other.pth", checkpoint_sha256="0" * 64)
    save_features(tmp_path / "other.npz", other)
    assert main(["search", "query", str(tmp_path / "gallery.index"), "--features", str(tmp_path / "other.npz")]) == 2
    assert "cannot be compared" in capsys.readouterr().err
    assert main(["search", "query", str(tmp_path / "gallery.index"), query.path, "--features", str(queries)]) == 2
    assert "either as images" in capsys.readouterr().err

    # --weights: the gallery's checkpoint moved is fine, another checkpoint is said to be one
    shutil.copy(tiny_checkpoint, moved := tmp_path / "moved.pth")
    save_checkpoint(retrained := tmp_path / "retrained.pth", {**load_checkpoint(tiny_checkpoint), "epoch": 99})
    for weights, warned in ((moved, False), (retrained, True)):
        assert main(["search", "query", str(tmp_path / "gallery.index"), query.path, "--weights", str(weights)]) == 0
        assert ("not the checkpoint that embedded the gallery" in capsys.readouterr().err) == warned


@pytest.mark.parametrize(("kind", "option", "value", "allowed"), [
    ("ivf", "nprobe", 0, "at least 1"), ("ivf", "nprobe", -3, "at least 1"), ("ivf", "nlist", -1, "0..30"),
    ("ivf", "nlist", 31, "0..30"), ("hnsw", "m", 0, "at least 2"), ("hnsw", "m", 1, "at least 2"),
    ("hnsw", "ef_construction", 0, "at least 1"), ("hnsw", "ef_search", 0, "at least 1"),
])
def test_index_options_out_of_range_are_named_before_faiss_sees_them(kind: str, option: str, value: int,
                                                                      allowed: str) -> None:
    with pytest.raises(IgoasError, match=rf"{option}={value} \(--{option.replace('_', '-')}\).*allowed: whole numbers, {allowed}"):
        GalleryIndex.build(_gallery(30), kind=kind, **{option: value})


def test_index_options_at_their_limits_work_and_a_bad_side_file_is_refused(tmp_path: Path) -> None:
    gallery = _gallery(30, dim=8)
    assert GalleryIndex.build(gallery, kind="ivf", nlist=30, nprobe=1).search(gallery.embeddings[:1], 1).indices[0, 0] >= 0
    assert GalleryIndex.build(gallery, kind="ivf", nlist=0).options["nlist"] >= 1  # 0: from the gallery size
    assert GalleryIndex.build(gallery, kind="hnsw", m=2, ef_construction=1, ef_search=1).search(
        gallery.embeddings[:1], 1).indices[0, 0] >= 0
    GalleryIndex.build(gallery, kind="ivf").save(tmp_path / "g.index")
    side = json.loads(metadata_path(tmp_path / "g.index").read_text())
    side["options"]["nprobe"] = 0
    metadata_path(tmp_path / "g.index").write_text(json.dumps(side))
    with pytest.raises(IgoasError, match="nprobe=0"):
        GalleryIndex.load(tmp_path / "g.index")
    with pytest.raises(IgoasError, match="whole numbers"):
        GalleryIndex.build(gallery, kind="ivf", nprobe="many")
