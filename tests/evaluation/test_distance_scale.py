"""One distance per metric, on one scale: a query-gallery pair gets the same number from the
demo's ranked lists, `igoas viz ranked`, the search page, `igoas search` and the pair
distances behind `igoas viz distances`, each shown with its metric's name."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from igoas.cli import main
from igoas.evaluation.distance import compute_distance, distance_from_similarity, metric_label
from igoas.viz.ranking import RankedLists


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_an_index_similarity_converts_to_the_metric_distance(metric: str) -> None:
    rows = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    expected = compute_distance(rows[:2], rows[2:], metric)
    np.testing.assert_allclose(distance_from_similarity(rows[:2] @ rows[2:].T, metric), expected, atol=1e-6)
    assert distance_from_similarity(np.float32(-np.inf), metric) == np.inf, "an empty index slot stays last"


def test_every_metric_names_its_scale() -> None:
    assert "0 to 4" in metric_label("euclidean") and "1 - cosine" in metric_label("cosine")


@pytest.mark.slow
def test_one_pair_gets_one_number_in_every_tool(tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import igoas.studies.demo
    from igoas.evaluation.verification import sampled_pair_distances
    from igoas.deploy.extraction import dataset_images, extract
    from igoas.deploy.inference import ReIDModel
    from igoas.retrieval import GalleryIndex
    from igoas.deploy.serve import SearchService

    drawn: list[RankedLists] = []
    monkeypatch.setattr(RankedLists, "plot", lambda self, out, *args, **kwargs: drawn.append(self) or [Path(out)])
    data = ["--dataset", "synthetic", "--root", str(synthetic_root)]
    assert main(["viz", "ranked", str(tiny_checkpoint), *data, "--num-queries", "1", "--topk", "3",
                 "--out", str(tmp_path / "r.png")]) == 0
    viz_ranked = drawn[-1]
    query_path, gallery_path = viz_ranked.query_paths[0], viz_ranked.gallery_paths[0][0]
    assert viz_ranked.metric == "euclidean"

    model = ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32")
    query = extract(model, dataset_images("synthetic", synthetic_root, "query"), out=tmp_path / "q.npz")
    gallery = extract(model, dataset_images("synthetic", synthetic_root, "gallery"), out=tmp_path / "g.npz")
    q, g = query.paths.index(query_path), gallery.paths.index(gallery_path)
    expected = float(compute_distance(query.embeddings[q : q + 1], gallery.embeddings[g : g + 1])[0, 0])
    assert 0.0 < expected <= 4.0, "squared Euclidean of unit embeddings"
    numbers = {"viz ranked": viz_ranked.distances[0][0]}

    igoas.studies.demo._ranked_list_figure(tmp_path, {"query": query, "gallery": gallery})
    demo = drawn[-1]
    row = demo.query_paths.index(query_path)
    numbers["demo"] = demo.distances[row][demo.gallery_paths[row].index(gallery_path)]

    hits = SearchService(model, GalleryIndex.build(gallery)).search(query_path, topk=3, pid=int(query.pids[q]),
                                                                     camid=int(query.camids[q]))
    numbers["serve"] = next(hit.distance for hit in hits.hits if hit.path == gallery_path)
    assert hits.metric == "euclidean"

    assert main(["search", "build", str(tmp_path / "g.npz"), "--index", str(tmp_path / "g.faiss")]) == 0
    capsys.readouterr()
    assert main(["search", "query", str(tmp_path / "g.faiss"), "--features", str(tmp_path / "q.npz"),
                 "--topk", "3"]) == 0
    printed = capsys.readouterr().out.split(f"query {query_path}")[1].split("\nquery ")[0]
    assert re.search(r"rank\s+euclidean\s+id", printed), "the column names the metric"
    numbers["igoas search"] = float(re.search(rf"(\d\.\d+)\s+-?\d+\s+\S+\s+{re.escape(gallery_path)}", printed)[1])

    # viz distances: the same pair as a positive pair (its identities made equal)
    positive, _ = sampled_pair_distances(query.embeddings[q : q + 1], gallery.embeddings[g : g + 1], np.zeros(1),
                                         np.zeros(1), np.zeros(1), np.ones(1), "euclidean")
    numbers["viz distances"] = float(positive[0])

    for tool, number in numbers.items():
        assert number == pytest.approx(expected, abs=1e-4), tool
