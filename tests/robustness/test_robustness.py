"""Occlusion stress test: exact occluded areas, positions, determinism, and the run end to end."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from igoas.cli import main
from igoas.utils.errors import ConfigError, IgoasError
from igoas.commands.robustness import parse_areas
from igoas.robustness.occluder_painting import POSITIONS, occluded_pixel_count, occlusion_mask, query_rng
from igoas.robustness.occluder_painting import paint_occluder
from igoas.robustness.occlusion_stress import OccludedImages, occlusion_stress_test, write_stress_test


def test_pixel_count_rounds_half_up() -> None:
    assert occluded_pixel_count(10, 64, 32) == 205  # 204.8
    assert occluded_pixel_count(25, 2, 5) == 3  # 2.5 rounds up (Python's round() would give 2)
    assert occluded_pixel_count(35, 2, 5) == 4  # 3.5
    assert occluded_pixel_count(0, 384, 128) == 0 and occluded_pixel_count(100, 384, 128) == 384 * 128
    with pytest.raises(ConfigError, match=r"\[0, 100\]"):
        occluded_pixel_count(120, 4, 4)


@settings(max_examples=60, deadline=None)
@given(height=st.integers(1, 48), width=st.integers(1, 24), area=st.floats(0, 100), seed=st.integers(0, 1000),
       position=st.sampled_from(sorted(POSITIONS)))
def test_mask_has_exactly_the_requested_area(height: int, width: int, area: float, seed: int, position: str) -> None:
    mask = occlusion_mask(height, width, area, position, np.random.default_rng(seed))
    assert mask.shape == (height, width) and mask.dtype == bool
    assert int(mask.sum()) == occluded_pixel_count(area, height, width)


@pytest.mark.parametrize("area", [5.0, 10.0, 33.0, 60.0])
def test_bands_start_at_the_requested_edge(area: float) -> None:
    height, width = 64, 32
    count = occluded_pixel_count(area, height, width)
    rng = np.random.default_rng(0)
    full_rows, full_cols = count // width, count // height
    top = occlusion_mask(height, width, area, "top", rng)
    assert top[:full_rows].all() and not top[full_rows + 1:].any()
    np.testing.assert_array_equal(occlusion_mask(height, width, area, "bottom", rng), top[::-1])
    left = occlusion_mask(height, width, area, "left", rng)
    assert left[:, :full_cols].all() and not left[:, full_cols + 1:].any()
    np.testing.assert_array_equal(occlusion_mask(height, width, area, "right", rng), left[:, ::-1])


def test_random_position_is_one_block_that_moves_with_the_seed() -> None:
    masks = [occlusion_mask(64, 32, 20, "random", np.random.default_rng(seed)) for seed in range(6)]
    for mask in masks:
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        # a block of full rows plus at most one partial row
        assert len(rows) == rows[-1] - rows[0] + 1 and box - mask.sum() < cols[-1] - cols[0] + 1
    assert len({mask.tobytes() for mask in masks}) > 1


def test_area_zero_leaves_the_image_untouched() -> None:
    pixels = torch.rand(3, 16, 8)
    for occluder in ("rectangle", "shapes"):
        occluded, mask = paint_occluder(pixels, 0.0, "random", occluder, np.random.default_rng(0))
        assert torch.equal(occluded, pixels) and not mask.any()


@pytest.mark.parametrize("occluder", ["rectangle", "shapes"])
def test_only_the_masked_pixels_change(occluder: str) -> None:
    pixels = torch.rand(3, 64, 32)
    for position in POSITIONS:
        for area in (3.0, 30.0, 60.0):
            occluded, mask = paint_occluder(pixels, area, position, occluder, query_rng(0, 1, position, area))
            assert int(mask.sum()) == occluded_pixel_count(area, 64, 32)
            changed = (occluded != pixels).any(dim=0).numpy()
            assert not (changed & ~mask).any()
            assert changed.sum() > 0.9 * mask.sum()
            assert float(occluded.min()) >= 0.0 and float(occluded.max()) <= 1.0


def test_unknown_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="position"):
        occlusion_mask(8, 8, 10, "middle", np.random.default_rng(0))
    with pytest.raises(ConfigError, match="occluder"):
        paint_occluder(torch.rand(3, 8, 8), 10, "top", "smoke")
    assert parse_areas("0,10,...,60") == [0, 10, 20, 30, 40, 50, 60]
    assert parse_areas("5, 7.5") == [5.0, 7.5]
    with pytest.raises(ConfigError, match="cannot read areas"):
        parse_areas("0,...,60")


@pytest.fixture(scope="module")
def dataset(synthetic_root: Path):
    from igoas.data import build_dataset

    return build_dataset("synthetic", synthetic_root)


def test_queries_fed_to_the_model(dataset, tiny_checkpoint: Path) -> None:
    from igoas.artifacts.checkpoint import load_checkpoint
    from igoas.imaging.preprocess import Preprocess

    preprocess = Preprocess.from_dict(load_checkpoint(tiny_checkpoint)["preprocess"])
    samples = dataset.query[:3]
    clean = OccludedImages(samples, preprocess, 0.0, "top")
    for index, sample in enumerate(samples):
        item = clean[index]
        assert torch.equal(item["image"], preprocess([sample.path])[0]), "area 0 is the plain preprocessing"
        assert item["occluded_pixels"] == 0 and item["pid"] == sample.pid and item["camid"] == sample.camid
    count = occluded_pixel_count(40, preprocess.height, preprocess.width)
    for position in POSITIONS:
        occluded = OccludedImages(samples, preprocess, 40.0, position, seed=3)
        again = OccludedImages(samples, preprocess, 40.0, position, seed=3)
        for index in range(len(samples)):
            item = occluded[index]
            changed = (item["image"] != clean[index]["image"]).any(dim=0)
            assert item["occluded_pixels"] == count and int(changed.sum()) == count
            assert torch.equal(item["image"], again[index]["image"]), "deterministic under a seed"
    top = OccludedImages(samples, preprocess, 40.0, "top")[0]["image"]
    changed = (top != clean[0]["image"]).any(dim=0)
    assert changed[0].all() and not changed[-1].any(), "the top band hides the first rows"


@pytest.mark.slow
def test_stress_test_end_to_end(dataset, tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = occlusion_stress_test({"a": tiny_checkpoint, "b": tiny_checkpoint}, dataset, areas=[0, 50],
                                   positions=["top", "random"], seed=1, batch_size=16)
    records = result.records
    assert [(r.checkpoint, r.position, r.area) for r in records] == [
        (name, position, area) for name in ("a", "b") for position in ("top", "random") for area in (0.0, 50.0)]
    by_key = {(r.checkpoint, r.position, r.area): r for r in records}
    for name in ("a", "b"):
        clean_top, clean_random = by_key[(name, "top", 0.0)], by_key[(name, "random", 0.0)]
        assert (clean_top.R1, clean_top.mAP) == (clean_random.R1, clean_random.mAP)
    for (name, position, area), record in by_key.items():
        twin = by_key[("b", position, area)]
        assert (record.R1, record.mAP, record.mINP) == (twin.R1, twin.mAP, twin.mINP), "same occlusions every time"
        assert all(0.0 <= value <= 100.0 for value in (record.mINP, record.mAP)) and record.R1 <= record.R5 <= 100.0
        assert record.num_queries == len(dataset.query)
    assert by_key[("a", "top", 50.0)].occluded_percent == pytest.approx(50.0)
    assert by_key[("a", "top", 0.0)].occluded_percent == 0.0

    written = write_stress_test(result, tmp_path / "out")
    data = json.loads(written["json"].read_text())
    assert data["settings"]["areas"] == [0.0, 50.0] and len(data["results"]) == 8
    identity = {"path": str(tiny_checkpoint.resolve()), "sha256": hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()}
    assert data["settings"]["checkpoints"] == {"a": identity, "b": identity}
    assert data["settings"]["root"] == dataset.root and data["settings"]["versions"]["torch"] == torch.__version__
    from PIL import Image

    with Image.open(written["figure"]) as image:
        assert image.size == (3 * 320, 2 * 260)


def test_a_gallery_smaller_than_ten_still_has_finite_r5_and_r10(dataset, tiny_checkpoint: Path,
                                                                  tmp_path: Path) -> None:
    """The CMC keeps its last value past the gallery's size, so the JSON holds numbers, never NaN."""
    from types import SimpleNamespace

    query = dataset.query[0]
    matches = [g for g in dataset.gallery if g.pid == query.pid and g.camid != query.camid]
    small = SimpleNamespace(name="four", query=dataset.query[:4],
                            gallery=(matches + [g for g in dataset.gallery if g.pid != query.pid])[:4])
    result = occlusion_stress_test([tiny_checkpoint], small, areas=[0], positions=["top"])
    record = result.records[0]
    assert 0.0 <= record.R1 <= record.R5 <= record.R10 <= 100.0

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    text = write_stress_test(result, tmp_path)["json"].read_text()
    assert json.loads(text, parse_constant=refuse)["results"][0]["R10"] == record.R10


def test_json_files_refuse_nan(tmp_path: Path) -> None:
    from igoas.utils.errors import IgoasError
    from igoas.utils.fileio import write_json

    with pytest.raises(IgoasError, match="bad.json: a value is NaN or infinite"):
        write_json(tmp_path / "bad.json", {"R5": float("nan")})
    assert not list(tmp_path.iterdir()), "nothing written"


@pytest.mark.slow
def test_robustness_cli(tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "stress"
    assert main(["robustness", str(tiny_checkpoint), "--dataset", "synthetic", "--root", str(synthetic_root),
                 "--areas", "0,30,...,60", "--positions", "bottom", "--occluder", "shapes", "--workers", "0",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "bottom" in printed and f"wrote {out / 'robustness.json'}" in printed
    results = json.loads((out / "robustness.json").read_text())["results"]
    assert [r["area"] for r in results] == [0.0, 30.0, 60.0]
    assert main(["robustness", str(tiny_checkpoint), "--dataset", "synthetic", "--root", str(synthetic_root),
                 "--positions", "middle", "--out", str(out)]) == 2
    assert "middle" in capsys.readouterr().err


def test_a_drawing_of_the_wrong_shape_is_named() -> None:
    from igoas.robustness.occluder_painting import _occluder_layers

    with pytest.raises(IgoasError, match="expected 2 x 2 x 4"):
        _occluder_layers(np.zeros((2, 2, 3), np.uint8), 2, 2)


def test_reader_options_reach_the_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import igoas.commands.robustness

    seen: list[tuple[tuple, dict]] = []

    def build_dataset(*args, **options):
        seen.append((args, options))
        raise IgoasError("stop here")

    monkeypatch.setattr(igoas.commands.robustness, "build_dataset", build_dataset)
    assert main(["robustness", "a.pth", "--dataset", "partial_reid", "--root", str(tmp_path), "-o", "split=half",
                 "--option", "query_folder=partial_body_images", "--out", str(tmp_path / "out")]) == 2
    assert "stop here" in capsys.readouterr().err
    assert seen == [(("partial_reid", str(tmp_path)), {"split": "half", "query_folder": "partial_body_images"})]


def test_checkpoints_are_labelled_by_their_run_folders(tmp_path: Path) -> None:
    from igoas.robustness.occlusion_stress import labelled_checkpoints

    runs = [tmp_path / "runs" / name / "checkpoints" / "best.pth" for name in ("igoas", "baseline")]
    assert list(labelled_checkpoints(runs)) == ["igoas/best", "baseline/best"]
    assert list(labelled_checkpoints([runs[0], tmp_path / "last.pth"])) == ["best", "last"]
    twins = [tmp_path / "a" / "same" / "m.pth", tmp_path / "b" / "same" / "m.pth"]
    assert list(labelled_checkpoints(twins)) == ["a/same/m", "b/same/m"]
    assert list(labelled_checkpoints([runs[0], runs[0]])) == ["0:igoas/best", "1:igoas/best"]
