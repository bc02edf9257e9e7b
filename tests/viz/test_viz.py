"""Figures (`igoas.viz`) and `igoas viz`: sizes, contents that must show, the report's links and tables."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from factories import fake_run

from igoas.cli import main
from igoas.utils.errors import IgoasError
from igoas.viz import (activation_maps, occlusion_examples, pair_distances, plot_activation_comparison,
                       plot_activation_maps, plot_cmc_curves, plot_distance_distributions, plot_occlusion_methods,
                       plot_ranked_lists, plot_robustness, plot_roc, plot_training_curves, read_jsonl, roc_curve,
                       top_ranked, write_html_report)


def png(path: Path) -> np.ndarray:
    """The PNG at `path` as an H x W x 3 uint8 array, after checking it is a real, non-blank PNG."""
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 0, "the figure is blank"
    return pixels


def size_of(path: Path) -> tuple[int, int]:
    pixels = png(path)
    return pixels.shape[1], pixels.shape[0]


class PlantedMaps(nn.Module):
    """A stand-in network whose stage-4 maps are zero except one hot cell per image and branch."""

    def __init__(self, hot: dict[str, list[tuple[int, int]]], size: tuple[int, int] = (6, 3)) -> None:
        super().__init__()
        self.hot, self.size = hot, size
        self.mode_seen: bool | None = None

    def feature_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.mode_seen = self.training
        maps = {}
        for branch, cells in self.hot.items():
            values = torch.rand(images.shape[0], 8, *self.size) * 0.1
            for index, (row, col) in enumerate(cells):
                values[index, :, row, col] = 1.0 if branch == "global" else -2.0  # sign must not matter
            maps[branch] = values
        return maps


def test_activation_maps_find_planted_activations() -> None:
    hot = {"global": [(0, 0), (5, 2)], "suppression": [(3, 1), (1, 2)]}
    model = PlantedMaps(hot)
    model.train()
    maps = activation_maps(model, torch.zeros(2, 3, 96, 48))
    assert model.mode_seen is False and model.training, "maps are taken in eval mode, the mode is restored"
    assert set(maps) == {"global", "suppression"}
    for branch, cells in hot.items():
        assert maps[branch].shape == (2, 6, 3) and maps[branch].dtype == torch.float32
        for index, cell in enumerate(cells):
            values = maps[branch][index]
            assert divmod(int(values.argmax()), 3) == cell
            assert float(values.max()) == 1.0 and float(values.min()) == 0.0


def test_activation_maps_of_a_real_network_have_the_stage4_size() -> None:
    from igoas.model import build_model

    model = build_model("igoas", num_classes=4, backbone="resnet18").eval()
    maps = activation_maps(model, torch.randn(2, 3, 64, 32))
    assert {name: tuple(m.shape) for name, m in maps.items()} == {"global": (2, 4, 2), "suppression": (2, 4, 2)}
    assert all(0.0 <= float(m.min()) and float(m.max()) <= 1.0 for m in maps.values())
    with pytest.raises(IgoasError, match="feature_maps"):
        activation_maps(nn.Linear(2, 2), torch.zeros(1, 2))


def test_activation_figures(tmp_path: Path) -> None:
    images = torch.randn(2, 3, 64, 32)
    maps = {"global": torch.rand(2, 4, 2), "suppression": torch.rand(2, 4, 2)}
    # Grid: columns of (panel width + 6) px, rows of (16 title + panel height + 6) px; the
    # 64 x 32 input is drawn 3 times larger so panels are at least 96 px wide.
    assert size_of(plot_activation_maps(images, maps, tmp_path / "fig8.png")) == (3 * 102, 2 * 214)
    path = plot_activation_comparison(images, {"baseline": maps["global"], "igo": maps["suppression"],
                                               "erasing": maps["global"]}, tmp_path / "fig9.png",
                                      panel_size=(40, 80))
    assert size_of(path) == (4 * 46, 2 * 102)
    with pytest.raises(IgoasError, match="one map per image"):
        plot_activation_maps(images, {"global": torch.rand(3, 4, 2)}, tmp_path / "bad.png")


def test_activation_overlay_is_hot_where_the_map_is() -> None:
    from igoas.viz._figure import heat_overlay

    values = torch.zeros(4, 2)
    values[0, 0] = 1.0
    overlay = heat_overlay(np.full((64, 32, 3), 0.5), values, alpha=1.0)
    # jet: high values are red, low ones blue
    assert overlay[2, 2, 0] > 0.45 and overlay[2, 2, 2] < 0.05
    assert overlay[60, 30, 2] > 0.45 and overlay[60, 30, 0] < 0.05


def test_occlusion_figure_shows_igo_growing(tmp_path: Path) -> None:
    images = torch.randn(2, 3, 64, 32)
    examples = occlusion_examples(images, "igo", [0, 20, 40, 55, 60])
    hidden = [1 - float(mask.mean()) for _, mask in examples]
    # the ramp 0.1 + 0.4 e / 90 up to epoch 55, then 1/3 (SPEC section 2)
    assert hidden[:4] == sorted(hidden[:4]) and hidden[0] == pytest.approx(0.1, abs=0.01)
    assert hidden[3] == pytest.approx(0.1 + 0.4 * 55 / 90, abs=0.03) and hidden[4] == pytest.approx(1 / 3, abs=0.03)
    assert all(torch.equal(mask[0], mask[1]) for _, mask in examples), "IGO is batch-based"
    occluded, mask = occlusion_examples(images, "batch_dropblock", [0])[0]
    assert occluded is images and mask.shape == (2, 1, 64, 32)
    assert 1 - float(mask.mean()) == pytest.approx(0.25), "one of the 4 rows of the 4 x 2 stage-4 map"

    path = plot_occlusion_methods(images, tmp_path / "methods.png", epochs=(0, 30, 60))
    from igoas.model.occlusion import OCCLUSION_METHODS

    rows = len(OCCLUSION_METHODS) - 1  # all but "none"
    assert size_of(path) == (130 + 3 * (64 + 6), rows * (16 + 64 + 6))
    with pytest.raises(IgoasError, match="unknown occlusion"):
        plot_occlusion_methods(images, tmp_path / "x.png", methods=["nope"])


def _write_images(folder: Path, count: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"{index}.jpg"
        Image.fromarray((rng.random((40, 20, 3)) * 80 + 100).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def _count_colour(pixels: np.ndarray, rgb: tuple[float, float, float]) -> int:
    target = np.round(np.asarray(rgb) * 255)
    return int((np.abs(pixels.astype(int) - target).max(axis=2) <= 8).sum())


def test_ranked_lists_frame_matches_green_and_others_red(tmp_path: Path) -> None:
    from igoas.viz.ranking import MATCH_COLOUR, MISMATCH_COLOUR

    query, *gallery = _write_images(tmp_path / "images", 4)
    path = plot_ranked_lists([query, query], [gallery, gallery[:2]], [[True, False, True], [True, True]],
                             tmp_path / "ranked.png", topk=10, panel_size=(32, 64))
    pixels = png(path)
    assert (pixels.shape[1], pixels.shape[0]) == (4 * 38, 2 * 86)
    assert _count_colour(pixels, MATCH_COLOUR) > 100 and _count_colour(pixels, MISMATCH_COLOUR) > 100
    all_right = png(plot_ranked_lists([query], [gallery], [[True] * 3], tmp_path / "right.png", topk=2))
    assert _count_colour(all_right, MISMATCH_COLOUR) == 0 and all_right.shape[1] == 3 * (64 + 6)
    with pytest.raises(IgoasError, match="one gallery list"):
        plot_ranked_lists([query], [], [], tmp_path / "x.png")


def test_top_ranked_follows_the_protocol() -> None:
    distances = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    g_pids, g_camids = np.array([7, -1, 7, 3, 7]), np.array([0, 1, 1, 1, 2])
    indices, matches = top_ranked(distances, np.array([7]), g_pids, np.array([0]), g_camids, topk=4)
    # gallery 0 is the same person seen by the same camera, gallery 1 is junk: both left out
    assert indices.tolist() == [[2, 3, 4, -1]] and matches.tolist() == [[True, False, True, False]]


def test_cmc_figure(tmp_path: Path) -> None:
    curves = {"igoas": np.linspace(0.6, 1.0, 50), "baseline": np.linspace(40.0, 90.0, 50)}
    assert size_of(plot_cmc_curves(curves, tmp_path / "cmc.png")) == (640, 480)
    assert size_of(plot_cmc_curves(curves, tmp_path / "big.png", size=(800, 300))) == (800, 300)


def test_roc_curve_by_hand() -> None:
    roc = roc_curve(np.array([0.1, 0.4]), np.array([0.2, 0.3, 0.5]))
    np.testing.assert_allclose(roc.fpr, [0, 0, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(roc.tpr, [0, 0.5, 0.5, 0.5, 1, 1])
    assert roc.tpr_at(0.0) == 0.5 and roc.tpr_at(0.5) == 0.5 and roc.tpr_at(0.7) == 1.0
    assert roc.auc() == pytest.approx(2 / 3)
    tied = roc_curve(np.array([0.2]), np.array([0.2]))
    assert tied.fpr.tolist() == [0, 1] and tied.tpr.tolist() == [0, 1], "a tie is one operating point"
    assert roc_curve(np.array([0.0, 0.1]), np.array([0.5, 0.9])).auc() == 1.0
    with pytest.raises(IgoasError, match="positive and negative"):
        roc_curve(np.array([]), np.array([1.0]))


def test_pair_distances_drop_same_camera_and_junk() -> None:
    distances = np.arange(8, dtype=float).reshape(2, 4)
    positive, negative = pair_distances(distances, np.array([1, 2]), np.array([1, 1, 2, -1]), np.array([0, 0]),
                                        np.array([0, 1, 1, 1]))
    assert sorted(positive) == [1.0, 6.0] and sorted(negative) == [2.0, 4.0, 5.0]


def test_distance_figures(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    positive, negative = rng.normal(0.4, 0.1, 200), rng.normal(1.0, 0.1, 5000)
    assert size_of(plot_distance_distributions(positive, negative, tmp_path / "d.png")) == (640, 480)
    assert size_of(plot_roc(roc_curve(positive, negative), tmp_path / "roc.png")) == (640, 480)


@pytest.mark.parametrize("metric, label", [("euclidean", "squared Euclidean distance (0 to 4 on unit embeddings)"),
                                           ("cosine", "cosine distance (1 - cosine similarity, 0 to 2)")])
def test_distance_figure_names_its_metric(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, metric: str,
                                          label: str) -> None:
    import igoas.viz.distances as distances

    saved = []
    monkeypatch.setattr(distances, "save_figure", lambda figure, path: saved.append(figure) or Path(path))
    plot_distance_distributions(np.array([0.2, 0.3]), np.array([0.9, 1.1]), tmp_path / "d.png", metric=metric)
    assert saved[0].axes[0].get_xlabel() == label
    with pytest.raises(IgoasError, match="unknown distance metric 'manhattan'"):
        plot_distance_distributions(np.array([0.2]), np.array([0.9]), tmp_path / "d.png", metric="manhattan")


@pytest.mark.slow
def test_training_curves_and_report(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    fake_run(run_dir)
    assert size_of(plot_training_curves(run_dir, tmp_path / "curves.png")) == (1200, 700)
    (run_dir / "robustness").mkdir()
    plot_cmc_curves({"a": np.linspace(0.5, 1, 20)}, run_dir / "robustness" / "extra.png")

    from igoas.evaluation.model_evaluation import results_document
    from igoas.evaluation.result import RankResult

    final = {name: RankResult(cmc=np.array([r1, 0.8, 0.9]), mAP=0.4, mINP=0.2, num_valid_queries=7,
                              num_skipped_queries=0) for name, r1 in (("query", 0.61), ("holistic", 0.77))}
    (run_dir / "metrics.json").write_text(json.dumps(results_document(final, checkpoint="last.pth", epoch=3)))
    report = write_html_report(run_dir)
    assert report == run_dir / "report.html"
    page = report.read_text(encoding="utf-8")
    links = re.findall(r"<img src='([^']+)'", page)
    assert sorted(links) == ["figures/training_curves.png", "robustness/extra.png"]
    assert all((run_dir / link).is_file() and not Path(link).is_absolute() for link in links)
    rows = re.findall(r"<tr( class=best)?><td>(\d+)</td>", page)
    assert rows == [("", "1"), (" class=best", "2"), ("", "3")], "epoch 2 has the best query mAP"
    assert "<tr><td>query</td><td>61.00</td>" in page and "<tr><td>holistic</td><td>77.00</td>" in page
    assert "45.50" in page and "&lt;igoas&gt;" in page and "<igoas>" not in page
    assert "<script" not in page and "http" not in page


@pytest.mark.slow
def test_report_elsewhere_links_relative_to_itself(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    fake_run(run_dir)
    write_html_report(run_dir)  # the run's own report draws run/figures/training_curves.png
    report = write_html_report(run_dir, tmp_path / "site" / "index.html")
    links = re.findall(r"<img src='([^']+)'", report.read_text(encoding="utf-8"))
    assert links and all((report.parent / link).resolve().is_file() for link in links)
    assert [Path(link).name for link in links].count("training_curves.png") == 1, links
    with pytest.raises(IgoasError, match="no such run directory"):
        write_html_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IgoasError, match="to report on"):
        write_html_report(tmp_path / "empty")


def test_read_jsonl_tolerates_a_cut_off_last_line_only(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3, "b"')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": 1}\n{broken\n{"a": 3}\n')
    with pytest.raises(IgoasError, match="line 2"):
        read_jsonl(path)


@pytest.mark.slow
def test_robustness_figure(tmp_path: Path) -> None:
    records = [{"checkpoint": name, "position": position, "area": area, "R1": 90 - area - bias, "mAP": 70 - area}
               for name, bias in (("igoas", 0), ("baseline", 10)) for position in ("top", "left")
               for area in (0, 20, 40)]
    assert size_of(plot_robustness(records, tmp_path / "r.png")) == (3 * 320, 2 * 260)
    assert size_of(plot_robustness(records[:3], tmp_path / "one.png", metrics=["R1"])) == (320, 260)


@pytest.mark.slow
def test_viz_cli_without_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = _write_images(tmp_path / "images", 2)
    out = tmp_path / "occ.png"
    assert main(["viz", "occlusion", "--images", *map(str, images), "--height", "64", "--width", "32",
                 "--methods", "igo,random_erasing", "--epochs", "0,60", "--out", str(out)]) == 0
    assert size_of(out) == (130 + 2 * (64 + 6), 2 * (16 + 64 + 6))
    run_dir = tmp_path / "run"
    fake_run(run_dir)
    assert main(["viz", "curves", str(run_dir)]) == 0
    assert (run_dir / "figures" / "training_curves.png").is_file()
    assert main(["viz", "report", str(run_dir)]) == 0 and (run_dir / "report.html").is_file()
    result = tmp_path / "eval.json"
    result.write_text(json.dumps({"R1": 50.0, "query_sets": {"query": {"R1": 50.0, "cmc": [50.0, 60.0, 70.0]}}}))
    assert main(["viz", "cmc", str(result), "--labels", "mine", "--out", str(tmp_path / "cmc.png")]) == 0
    assert main(["viz", "occlusion", "--out", str(out)]) == 2
    assert "--images" in capsys.readouterr().err


@pytest.mark.slow
def test_viz_cli_with_the_tiny_checkpoint(tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--dataset", "synthetic", "--root", str(synthetic_root)]
    assert main(["viz", "activations", str(tiny_checkpoint), *data, "--num", "2", "--out", str(tmp_path / "a.png")]) == 0
    assert size_of(tmp_path / "a.png") == (3 * (96 + 6), 2 * (16 + 192 + 6))
    assert main(["viz", "compare", str(tiny_checkpoint), str(tiny_checkpoint), *data, "--num", "1",
                 "--labels", "first,second", "--out", str(tmp_path / "c.png")]) == 0
    assert size_of(tmp_path / "c.png") == (3 * (96 + 6), 16 + 192 + 6)
    assert main(["viz", "ranked", str(tiny_checkpoint), *data, "--num-queries", "3", "--topk", "5",
                 "--out", str(tmp_path / "r.png")]) == 0
    assert size_of(tmp_path / "r.png") == (6 * (64 + 6), 3 * (26 + 128 + 6)), "captioned panels: rank, id, distance"
    assert main(["viz", "ranked", str(tiny_checkpoint), *data, "--num-queries", "2", "--per-query",
                 "--out", str(tmp_path / "per_query")]) == 0
    assert len(list((tmp_path / "per_query").glob("0*.png"))) == 2
    assert main(["viz", "distances", str(tiny_checkpoint), *data, "--out-dir", str(tmp_path / "d")]) == 0
    assert "TPR@FPR=0.01" in capsys.readouterr().out
    assert size_of(tmp_path / "d" / "roc.png") == (640, 480) and (tmp_path / "d" / "distances.png").is_file()
    assert main(["viz", "cmc", str(tiny_checkpoint), *data, "--out", str(tmp_path / "cmc.png")]) == 0
    png(tmp_path / "cmc.png")


def test_sampled_pair_distances_match_the_full_matrix_and_sample_negatives() -> None:
    from igoas.evaluation.distance import compute_distance
    from igoas.viz import sampled_pair_distances

    rng = np.random.default_rng(0)
    qf, gf = rng.normal(size=(30, 8)).astype(np.float32), rng.normal(size=(50, 8)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, 6, 30), rng.integers(-1, 6, 50)
    q_cams, g_cams = rng.integers(0, 3, 30), rng.integers(0, 3, 50)
    full = pair_distances(np.asarray(compute_distance(qf, gf, "cosine")), q_pids, g_pids, q_cams, g_cams)
    blocks = sampled_pair_distances(qf, gf, q_pids, g_pids, q_cams, g_cams, rows_per_block=7)
    for exact, blockwise in zip(full, blocks):
        np.testing.assert_allclose(np.sort(blockwise), np.sort(exact), rtol=1e-6)
    positive, negative = sampled_pair_distances(qf, gf, q_pids, g_pids, q_cams, g_cams, max_negatives=300, seed=1)
    assert len(positive) == len(full[0]) and 200 < len(negative) < 400
    assert set(np.round(negative, 6)) <= set(np.round(full[1], 6))


def test_a_percent_cmc_below_one_stays_below_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import igoas.viz.curves as curves

    drawn: list = []
    monkeypatch.setattr(curves, "save_figure", lambda figure, out: drawn.append(figure) or Path(out))
    weak = tmp_path / "weak.eval.json"  # a near-random model on a big gallery: R1 0.2 %, R20 0.9 %
    weak.write_text(json.dumps({"query_sets": {"query": {"cmc": [0.2, 0.5, 0.9]}}}))
    assert main(["viz", "cmc", str(weak), "--out", str(tmp_path / "cmc.png")]) == 0
    np.testing.assert_allclose(drawn[0].axes[0].lines[0].get_ydata(), [0.2, 0.5, 0.9])
    plot_cmc_curves({"fractions": np.array([0.002, 0.005])}, tmp_path / "f.png")
    np.testing.assert_allclose(drawn[1].axes[0].lines[0].get_ydata(), [0.2, 0.5])
    plot_cmc_curves({"percent": np.array([40.0, 60.0])}, tmp_path / "p.png", unit="percent")
    np.testing.assert_allclose(drawn[2].axes[0].lines[0].get_ydata(), [40.0, 60.0])


def test_viz_reader_options_reach_the_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import igoas.commands.viz

    seen: list[dict] = []

    def build_dataset(name, root, **options):
        seen.append(options)
        raise IgoasError("stop here")

    monkeypatch.setattr(igoas.commands.viz, "build_dataset", build_dataset)
    assert main(["viz", "occlusion", "--dataset", "occluded_reid", "--root", str(tmp_path), "-o", "split=half",
                 "--out", str(tmp_path / "o.png")]) == 2
    assert "stop here" in capsys.readouterr().err and seen == [{"split": "half"}]


def _drawn_training_curves(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import igoas.viz.curves as curves

    saved = []
    monkeypatch.setattr(curves, "save_figure", lambda figure, path: saved.append(figure) or Path(path))
    curves.plot_training_curves(run_dir, tmp_path / "curves.png")
    figure = saved[0]
    figure.canvas.draw()
    return {axes.get_title(): axes for axes in figure.axes}


def test_training_curves_read_well(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from igoas.training.run_log import RunLogger

    run_dir = tmp_path / "run"
    logger = RunLogger(run_dir, log_every=1, tensorboard=False, progress_bar=False)
    for step in range(1, 5):   # the zeroed and hidden shares coincide
        logger.step({"epoch": 6, "iteration": step, "batch": step, "lr": 3e-4,
                     "loss": {"total": 5.0 / step, "id_global": 3.0 / step},
                     "mask_zeroed_cells": 0.25, "mask_hidden": 0.25}, batch_images=8, total_steps=4)
    logger.metrics(6, 4, {"query": {"R1": 40.0, "R5": 50.0, "R10": 60.0, "mAP": 30.0, "mINP": 15.0}})
    logger.close()
    panels = _drawn_training_curves(run_dir, tmp_path, monkeypatch)

    losses = panels["total and identity losses"]
    assert [text.get_text() for text in losses.get_legend().get_texts()] == ["total", "id global"]
    occlusion = panels["occlusion: IGO area, stage-4 mask"].get_lines()
    assert len(occlusion) == 2 and np.allclose(occlusion[0].get_ydata(), occlusion[1].get_ydata())
    assert occlusion[0].get_linestyle() != occlusion[1].get_linestyle()
    assert occlusion[0].get_linewidth() > occlusion[1].get_linewidth(), "the first line is drawn under the others"
    evaluation = panels["evaluation (%)"]
    ticks = [tick for tick in evaluation.get_xticks() if evaluation.get_xlim()[0] <= tick <= evaluation.get_xlim()[1]]
    assert 6 in ticks and all(float(tick).is_integer() for tick in ticks), ticks
    assert [text.get_text() for text in evaluation.get_legend().get_texts()] == ["query R1", "query mAP"]
