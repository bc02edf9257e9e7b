"""The synthetic occluded-pedestrian dataset: determinism, caching, splits, occluders."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from igoas.cli import main
from igoas.data import OCCLUDER_KINDS, build_dataset, draw_occluder, render_synthetic
from igoas.data.synthetic.occluders import place_occluder
from igoas.utils.errors import ConfigError, DatasetError

IMAGE_SIZE = (64, 32)  # small frames keep the tests fast; the default is 128x64


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_synthetic(tmp_path_factory.mktemp("synthetic") / "set", num_ids=30, seed=7, size="tiny",
                            image_size=IMAGE_SIZE)


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_rendering_is_byte_identical_for_a_seed_whatever_the_workers(rendered: Path, tmp_path: Path) -> None:
    again = render_synthetic(tmp_path / "again", num_ids=30, seed=7, size="tiny", image_size=IMAGE_SIZE, num_workers=2)
    assert files_of(again) == files_of(rendered)
    other = render_synthetic(tmp_path / "other", num_ids=30, seed=8, size="tiny", image_size=IMAGE_SIZE)
    assert files_of(other) != files_of(rendered)


def test_cached_copy_is_reused_and_never_replaced_by_other_settings(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        root = render_synthetic(tmp_path / "set", num_ids=6, seed=0, size="tiny", image_size=IMAGE_SIZE)
    assert "rendering the synthetic set" in caplog.text and "new folder" in caplog.text
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*.jpg")}
    assert render_synthetic(root, num_ids=6, seed=0, size="tiny", image_size=IMAGE_SIZE) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.jpg")} == stamp
    with pytest.raises(DatasetError, match=r"other settings \(seed 0 here, 1 asked\); refusing"):
        render_synthetic(root, num_ids=6, seed=1, size="tiny", image_size=IMAGE_SIZE)
    preset = render_synthetic(tmp_path / "preset", size="tiny", image_size=IMAGE_SIZE)
    with pytest.raises(DatasetError) as err:  # another size: the fix is the option, not deleting the set
        render_synthetic(preset, size="small", image_size=IMAGE_SIZE)
    assert "To use the set that is there, pass data.options.size=tiny; to render" in str(err.value)
    assert json.loads((root / "meta.json").read_text())["params"]["seed"] == 0
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.jpg")} == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    next(root.glob("query/*.jpg")).unlink()  # an incomplete copy of the same set is rendered again
    render_synthetic(root, num_ids=6, seed=0, size="tiny", image_size=IMAGE_SIZE)
    assert build_dataset("synthetic", root).query


def test_refuses_to_overwrite_other_data_and_bad_parameters(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    with pytest.raises(DatasetError, match="refusing"):
        render_synthetic(tmp_path / "mine", size="tiny")
    with pytest.raises(ConfigError, match="size"):
        render_synthetic(tmp_path / "x", size="huge")
    with pytest.raises(ConfigError, match="num_ids"):
        render_synthetic(tmp_path / "x", num_ids=2, size="tiny")
    with pytest.raises(DatasetError, match="igoas data synth"):
        build_dataset("synthetic", tmp_path / "mine")


def test_splits_mirror_occluded_duke(rendered: Path) -> None:
    data = build_dataset("synthetic", rendered)
    meta = json.loads((rendered / "meta.json").read_text())["images"]
    record = {Path(k).name + ":" + v["split"]: v for k, v in meta.items()}

    def records(samples, split):
        return [record[Path(s.path).name + ":" + split] for s in samples]

    train_ids = {Path(s.path).name[:4] for s in data.train}
    test_ids = {s.pid for s in data.query + data.gallery}
    assert train_ids.isdisjoint({f"{p:04d}" for p in test_ids})
    queries = records(data.query, "query")
    assert queries and all(r["occluder"] in OCCLUDER_KINDS and 0.2 <= r["occluded_fraction"] <= 0.6 for r in queries)
    train_occluded = np.mean([r["occluder"] is not None for r in records(data.train, "train")])
    gallery_occluded = np.mean([r["occluder"] is not None for r in records(data.gallery, "gallery")])
    assert 0.0 < train_occluded < 0.3 and gallery_occluded < 0.3
    query_ids = {s.pid for s in data.query}
    assert {s.pid for s in data.gallery} - query_ids  # distractor identities in the gallery
    for q in data.query:  # every query can be matched from another camera
        assert any(g.pid == q.pid and g.camid != q.camid for g in data.gallery)
    assert data.num_train_pids == 18 and data.protocol_info["synthetic_seed"] == 7


def test_holistic_queries_are_the_same_frames_without_occluder(rendered: Path) -> None:
    data = build_dataset("synthetic", rendered)
    holistic = data.extra_queries["holistic"]
    assert [Path(s.path).name for s in holistic] == [Path(s.path).name for s in data.query]
    assert [(s.pid, s.camid) for s in holistic] == [(s.pid, s.camid) for s in data.query]
    for occluded, whole in zip(data.query[:5], holistic[:5]):
        a = np.asarray(Image.open(occluded.path), dtype=float)
        b = np.asarray(Image.open(whole.path), dtype=float)
        changed = np.abs(a - b).max(axis=2) > 40
        assert 0.02 < changed.mean() < 0.9  # the occluder changes part of the frame, not all of it


@pytest.mark.parametrize("kind", OCCLUDER_KINDS)
def test_draw_occluder_gives_deterministic_rgba_shapes(kind: str) -> None:
    shape = draw_occluder(kind, 60, 40, np.random.default_rng(3))
    assert shape.shape == (60, 40, 4) and shape.dtype == np.uint8
    assert 0.05 < (shape[..., 3] > 127).mean() <= 1.0
    assert np.array_equal(shape, draw_occluder(kind, 60, 40, np.random.default_rng(3)))


def test_draw_occluder_rejects_unknown_kind() -> None:
    with pytest.raises(ConfigError, match="car"):
        draw_occluder("cloud", 10, 10, np.random.default_rng(0))


def test_occlude_hides_the_requested_range_of_a_body() -> None:
    mask = np.zeros((128, 64), dtype=bool)
    mask[10:120, 20:44] = True
    mask[30:70, 12:52] = True  # arms
    for seed in range(12):
        placed = place_occluder(mask, np.random.default_rng(seed))
        assert 0.2 <= placed.fraction <= 0.6 and placed.kind in OCCLUDER_KINDS


def test_cli_synth_renders_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["data", "synth", str(tmp_path / "cli"), "--ids", "6", "--size", "tiny", "--height", "64",
                 "--width", "32"])
    out = capsys.readouterr().out
    assert code == 0 and "query: 100 % of images occluded" in out and "query:holistic" in out
    assert main(["data", "check", str(tmp_path / "cli"), "--dataset", "synthetic"]) == 0


@pytest.mark.parametrize("height,width", [(1, 1), (4, 3), (12, 8), (16, 16)])
def test_every_occluder_kind_draws_at_tiny_sizes(height, width):
    for kind in OCCLUDER_KINDS:
        rgba = draw_occluder(kind, height, width, np.random.default_rng(0))
        assert rgba.shape == (height, width, 4) and rgba.dtype == np.uint8


def test_rendering_removes_the_staging_folders_killed_renderings_left(tmp_path: Path) -> None:
    """A SIGKILLed `data synth` runs no `finally`: its `.NAME.rendering-PID.*` folder is removed by the next one."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = finished.stdout.strip()
    killed = tmp_path / f".set.rendering-{dead}.k3j2"
    running = tmp_path / f".set.rendering-{os.getppid()}.a8f1"  # a rendering still under way
    other = tmp_path / f".other.rendering-{dead}.x1"
    for folder in (killed, running, other):
        (folder / "bounding_box_train").mkdir(parents=True)
        (folder / "bounding_box_train" / "0001_c1s1_000001_00.jpg").write_bytes(b"partial")
    root = render_synthetic(tmp_path / "set", num_ids=6, seed=0, size="tiny", image_size=IMAGE_SIZE)
    assert sorted(tmp_path.iterdir()) == sorted([root, running, other])
