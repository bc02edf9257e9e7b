"""Figures a reader can trust: integer CMC ranks on a 0-100 % axis, a legend that hides no
curve, run names as series labels, the requested image format, captioned ranked lists and
a report whose best/last and untrained-baseline numbers are tables."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from igoas.cli import main


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every matplotlib Figure the plotting functions save, kept for inspection."""
    import igoas.viz._figure as figure_module

    figures: list[Any] = []
    original = figure_module.save_figure

    def keep(figure: Any, out_path: Any) -> Path:
        figures.append(figure)
        return original(figure, out_path)

    for module in ("igoas.viz.curves", "igoas.viz.ranking"):
        monkeypatch.setattr(f"{module}.save_figure", keep)
    return figures


def _images(folder: Path, count: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(np.full((40, 20, 3), 60 + 40 * index, np.uint8)).save(folder / f"{index}.jpg")
    return sorted(folder.glob("*.jpg"))


def test_cmc_axes_and_legend(tmp_path: Path, drawn: list[Any]) -> None:
    from igoas.viz import plot_cmc_curves

    curves = {f"run {i}": np.linspace(0.02 + 0.2 * i, 0.9, 20) for i in range(4)}
    plot_cmc_curves(curves, tmp_path / "cmc.png", max_rank=7)
    axes = drawn[0].axes[0]
    low, high = axes.get_xlim()
    ticks = [t for t in axes.get_xticks() if low <= t <= high]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert axes.get_ylim() == (0.0, 100.0)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(drawn[0]).get_renderer()
    legend, plot_area = axes.get_legend().get_window_extent(renderer), axes.get_window_extent(renderer)
    assert not legend.overlaps(plot_area), "the legend sits outside the plotting area"
    assert len(axes.get_legend().get_texts()) == 4


def test_cmc_labels_are_run_names_and_jpeg_is_jpeg(tmp_path: Path, drawn: list[Any]) -> None:
    document = {"query_sets": {"query": {"R1": 50.0, "cmc": [50.0, 60.0, 70.0]}}}
    for run in ("igoas_seed1", "baseline_seed1"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "metrics.json").write_text(json.dumps(document))
    out = tmp_path / "cmc.jpg"
    assert main(["viz", "cmc", str(tmp_path / "igoas_seed1" / "metrics.json"),
                 str(tmp_path / "baseline_seed1" / "metrics.json"), "--out", str(out)]) == 0
    labels = [text.get_text() for text in drawn[0].axes[0].get_legend().get_texts()]
    assert labels == ["igoas_seed1 (R1 50.0%)", "baseline_seed1 (R1 50.0%)"]
    assert out.read_bytes()[:3] == b"\xff\xd8\xff", "a .jpg output is a JPEG file"
    # `igoas eval`'s outputs: RUN/eval_best.json in a run, X.eval.json beside a bare checkpoint
    (tmp_path / "igoas_seed1" / "eval_best.json").write_text(json.dumps(document))
    (tmp_path / "official.eval.json").write_text(json.dumps(document))
    assert main(["viz", "cmc", str(tmp_path / "igoas_seed1" / "eval_best.json"), str(tmp_path / "official.eval.json"),
                 "--out", str(out)]) == 0
    labels = [text.get_text() for text in drawn[-1].axes[0].get_legend().get_texts()]
    assert labels == ["igoas_seed1 best (R1 50.0%)", "official (R1 50.0%)"]


def test_ranked_lists_show_distance_and_identity_one_image_per_query(tmp_path: Path, drawn: list[Any]) -> None:
    from igoas.viz import RankedLists

    query_paths, gallery_paths = _images(tmp_path / "q", 2), _images(tmp_path / "g", 4)
    distances = np.array([[0.4, 0.1, 0.3, 0.2], [0.5, 0.6, 0.7, 0.1]])
    lists = RankedLists.from_distances(distances, query_paths, np.array([3, 9]), np.array([0, 0]), gallery_paths,
                                       np.array([3, 4, 3, 5]), np.array([1, 1, 1, 1]), topk=3)
    (combined,) = lists.plot(tmp_path / "ranked.png", topk=3)
    titles = [axes.get_title() for axes in drawn[0].axes]
    assert titles[:4] == ["query\nid 3", "#1 id 4\neuclidean 0.100", "#2 id 5\neuclidean 0.200", "#3 id 3\neuclidean 0.300"]
    assert combined.is_file()
    per_query = lists.plot(tmp_path / "per_query", topk=3, per_query=True)
    assert [path.name for path in per_query] == ["001_0.png", "002_1.png"]
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in per_query)


def test_report_tables_best_last_and_the_untrained_baseline(tmp_path: Path) -> None:
    from igoas.evaluation.model_evaluation import results_document
    from igoas.training.run_log import RunLogger
    from igoas.evaluation.result import RankResult
    from igoas.viz import write_html_report

    run = tmp_path / "demo"
    logger = RunLogger(run, tensorboard=False, progress_bar=False)
    for epoch, m_ap in ((1, 30.0), (2, 45.5), (3, 41.0)):
        logger.metrics(epoch, epoch * 10, {"query": {"R1": m_ap + 10, "mAP": m_ap}, "holistic": {"R1": 70.0, "mAP": 60.0}})
    logger.close()

    def result(r1: float) -> RankResult:
        return RankResult(cmc=np.array([r1, 0.8, 0.9]), mAP=0.4, mINP=0.2, num_valid_queries=7, num_skipped_queries=0)

    document = results_document({"query": result(0.61)}, query_sets_shown_as={"query": "occluded queries"})
    document["untrained"] = results_document({"query": result(0.03)})
    (run / "metrics.json").write_text(json.dumps(document))
    page = write_html_report(run).read_text()
    assert "<b>Best</b>" not in page
    assert re.search(r"<tr class=best><th>best \(by query/mAP\)</th><td>2</td><td class=text>query</td>"
                     r"<td>55.50</td><td>45.50</td></tr>", page)
    assert re.search(r"<tr><th>last</th><td>3</td><td class=text>query</td><td>51.00</td><td>41.00</td></tr>", page)
    assert "<td>occluded queries, trained</td><td>61.00</td>" in page
    assert "<td>occluded queries, untrained network</td><td>3.00</td>" in page
