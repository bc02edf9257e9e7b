"""Corruption benchmark: the 20 corruptions, per-image seeding, the three settings, the
outputs, the training augmentation and the error without the optional extra."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from igoas.cli import main
from igoas.corruptions import CORRUPTIONS, corrupt, random_corruption
from igoas.robustness.corruption_benchmark import (SETTINGS, _groups, corruption_benchmark, corruption_summary,
                                         mean_corrupted_map, summary_of)
from igoas.corruptions.images import CLEAN, RANDOM, CorruptedImages, Job
from igoas.corruptions.rain import RAIN_TYPES, SEVERITY_RAIN_TYPE, rain
from igoas.utils.errors import ConfigError

FEW = ["gaussian_noise", "rain"]


def _picture(height: int = 64, width: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(30, 220, size=(height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def dataset(synthetic_root: Path):
    from igoas.data import build_dataset

    return build_dataset("synthetic", synthetic_root)


@pytest.fixture(scope="module")
def benchmark(dataset, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """Two corruptions x two severities, every setting, two labels of one checkpoint, with a cache."""
    cache = tmp_path_factory.mktemp("corruption_cache")
    result = corruption_benchmark({"a": tiny_checkpoint, "b": tiny_checkpoint}, dataset, FEW, [1, 3], seed=5,
                                  batch_size=16, cache_dir=cache, progress=False)
    return result, cache


def test_all_twenty_corruptions_resolve_and_corrupt() -> None:
    assert len(CORRUPTIONS) == len(set(CORRUPTIONS)) == 20
    image = _picture(40, 32)
    for name in CORRUPTIONS:
        corrupted = corrupt(image, name, 1, seed=0)
        assert corrupted.dtype == np.uint8 and corrupted.ndim == 3 and corrupted.shape[2] == 3, name
        if name == "rain":
            assert corrupted.shape[0] == 65, "the benchmark enlarges images of 60 rows or fewer for rain"
        else:
            assert corrupted.shape == image.shape, name
            assert not np.array_equal(corrupted, image), f"{name} left the image unchanged"
    with pytest.raises(ConfigError, match="unknown corruption 'fog_of_war'"):
        corrupt(image, "fog_of_war", 1, seed=0)
    with pytest.raises(ConfigError, match="1-5"):
        corrupt(image, "fog", 6, seed=0)


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "glass_blur", "frost", "rain"])
def test_seeded_per_image_and_global_state_untouched(name: str) -> None:
    image = _picture(48, 32)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first, second = corrupt(image, name, 2, seed=7), corrupt(image, name, 2, seed=7)
    assert np.array_equal(first, second), "the same seed gives the same pixels"
    assert not np.array_equal(first, corrupt(image, name, 2, seed=8)), "another seed, another draw"
    assert np.array_equal(np.random.get_state()[1], before), "NumPy's global state is restored"


@settings(max_examples=40, deadline=None)
@given(height=st.integers(32, 140), width=st.integers(32, 80), severity=st.integers(1, 5),
       seed=st.integers(0, 2**32 - 1))
@pytest.mark.slow
def test_glass_blur_equals_the_package_bit_for_bit(height: int, width: int, severity: int, seed: int) -> None:
    """The array-pass glass_blur gives the package's pixels and leaves NumPy's state where the package does."""
    from igoas.corruptions.glass import glass_blur
    from igoas.corruptions.library import imagecorruptions

    image = _picture(height, width, seed % 1000)
    np.random.seed(seed)
    expected = imagecorruptions().corruptions.glass_blur(image, severity)
    state_after_package = np.random.get_state()[1].copy()
    np.random.seed(seed)
    assert np.array_equal(glass_blur(image, severity), expected)
    assert np.array_equal(np.random.get_state()[1], state_after_package)


def test_rain_follows_the_benchmark_definition() -> None:
    image = np.full((128, 64, 3), 120, dtype=np.uint8)
    assert [SEVERITY_RAIN_TYPE[s] for s in range(1, 6)] == ["drizzle", "heavy", "heavy", "torrential", "torrential"]
    assert RAIN_TYPES == {"drizzle": (770, 10), "heavy": (600, 30), "torrential": (500, 60)}
    streaks = []
    for severity in range(1, 6):
        np.random.seed(0)
        rainy = rain(image, severity)
        # drop-free pixels keep the grey minus the brightness shift of (0.05 + 0.05 s) * 255
        background = int(120 - (0.05 + 0.05 * severity) * 255)
        assert rainy.min() == background
        streaks.append(int((rainy > background + 2).sum()))
    assert streaks[0] < streaks[1] and streaks[2] < streaks[4], "heavier rain, more streak pixels"


def test_random_setting_draws_a_corruption_per_image() -> None:
    draws = [random_corruption(0, "query", index) for index in range(200)]
    assert draws == [random_corruption(0, "query", index) for index in range(200)]
    assert {name for name, _ in draws} == set(CORRUPTIONS) and {s for _, s in draws} == {1, 2, 3, 4, 5}
    assert draws != [random_corruption(1, "query", index) for index in range(200)]
    assert random_corruption(0, "query", 3, ["fog"])[0] == "fog"


def test_random_setting_draws_from_the_chosen_severities() -> None:
    from igoas.corruptions.apply import image_seed

    def first_draws(index: int) -> tuple[str, int]:  # the draws made before severities could be chosen
        rng = np.random.default_rng(image_seed(0, "query", index, "random", 0))
        return CORRUPTIONS[int(rng.integers(len(CORRUPTIONS)))], int(rng.integers(1, 6))

    assert [random_corruption(0, "query", i) for i in range(300)] == [first_draws(i) for i in range(300)], \
        "the default grid draws exactly as before"
    chosen = [random_corruption(0, "query", i, FEW, [2, 4]) for i in range(100)]
    assert {s for _, s in chosen} == {2, 4} and {name for name, _ in chosen} == set(FEW)


def test_each_setting_embeds_the_right_images() -> None:
    sizes = {"query": 2, "gallery": 3}
    query_only = _groups(FEW, [1], ["query"], sizes)
    assert list(query_only) == [("query", CLEAN, 0), ("gallery", CLEAN, 0), ("query", "gaussian_noise", 1),
                                ("query", "rain", 1)], "corrupted queries against the clean gallery"
    both = _groups(FEW, [1], ["both"], sizes)
    assert ("gallery", "rain", 1) in both and len(both[("gallery", "rain", 1)]) == 3
    random = _groups(FEW, [1], ["random"], sizes)
    assert list(random) == [("query", CLEAN, 0), ("gallery", CLEAN, 0), ("query", RANDOM, 0), ("gallery", RANDOM, 0)]
    with pytest.raises(ConfigError, match="setting.*sideways"):
        corruption_benchmark(["never_loaded.pth"], None, FEW, [1], ["sideways"])


def test_summary_of_a_bare_network_asks_for_its_preprocessing() -> None:
    with pytest.raises(ConfigError, match=r"Linear\) needs its input preprocessing: pass preprocess="):
        corruption_summary(torch.nn.Linear(2, 2), None, corruptions=FEW, severities=[1])


def test_corrupted_images_follow_their_job(dataset, tmp_path: Path) -> None:
    from igoas.imaging.preprocess import Preprocess

    preprocess = Preprocess(64, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    samples = {"query": list(dataset.query), "gallery": list(dataset.gallery)}
    jobs = [Job("query", 0, CLEAN, 0), Job("query", 0, "gaussian_noise", 3), Job("query", 0, RANDOM, 0),
            Job("gallery", 1, "rain", 2)]
    images = CorruptedImages(samples, jobs, preprocess, seed=2, cache_dir=tmp_path)
    items = [images[i] for i in range(len(jobs))]
    assert torch.equal(items[0]["image"], preprocess([dataset.query[0].path])[0]), "clean is the plain preprocessing"
    assert not torch.equal(items[1]["image"], items[0]["image"])
    assert items[3]["pid"] == dataset.gallery[1].pid and items[3]["path"] == str(dataset.gallery[1].path)
    assert len(list(tmp_path.rglob("*.png"))) == 3, "one cached file per corrupted job"
    again = CorruptedImages(samples, jobs, preprocess, seed=2, cache_dir=tmp_path)
    assert all(torch.equal(again[i]["image"], items[i]["image"]) for i in range(len(jobs))), "read back from cache"
    other_seed = CorruptedImages(samples, jobs, preprocess, seed=3)
    assert not torch.equal(other_seed[1]["image"], items[1]["image"])


def test_the_cache_tells_source_files_and_random_grids_apart(dataset, tmp_path: Path) -> None:
    """The holistic queries have the occluded queries' file names; the random setting's
    images depend on the grid it draws from. Cached or not, each job gets its own image."""
    from igoas.imaging.preprocess import Preprocess

    preprocess = Preprocess(64, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    jobs = [Job("query", 0, "gaussian_noise", 3), Job("query", 0, RANDOM, 0)]
    occluded, holistic = list(dataset.query), list(dataset.extra_queries["holistic"])
    assert Path(occluded[0].path).name == Path(holistic[0].path).name
    for samples, corruptions, severities in [(occluded, FEW, [1, 3]), (holistic, FEW, [1, 3]),
                                             (holistic, ["fog"], [5]), (holistic, FEW, [2])]:
        cached = CorruptedImages({"query": samples}, jobs, preprocess, 2, tmp_path, corruptions, severities)
        fresh = CorruptedImages({"query": samples}, jobs, preprocess, 2, None, corruptions, severities)
        for index, job in enumerate(jobs):
            assert np.array_equal(cached.pixels(job), fresh.pixels(job)), (samples[0].path, corruptions, job)
            assert torch.equal(cached[index]["image"], fresh[index]["image"])


@pytest.mark.slow
def test_benchmark_identical_twice_and_summarised(benchmark, dataset, tiny_checkpoint: Path) -> None:
    result, cache = benchmark
    keys = [(r.checkpoint, r.setting, r.corruption, r.severity) for r in result.records]
    expected = [("clean", "clean", 0)] + [(setting, name, severity) for name in FEW for severity in (1, 3)
                                          for setting in ("query", "both")] + [("random", "random", 0)]
    assert keys == [(label, *key) for label in ("a", "b") for key in expected]
    first = [r for r in result.records if r.checkpoint == "a"]
    second = [r for r in result.records if r.checkpoint == "b"]
    assert [(r.R1, r.mAP, r.mINP) for r in first] == [(r.R1, r.mAP, r.mINP) for r in second], \
        "identical numbers on the second run (from the cache)"
    uncached = corruption_benchmark([tiny_checkpoint], dataset, FEW, [1, 3], ["query"], seed=5, batch_size=7,
                                    progress=False)
    cached_query = [(r.corruption, r.severity, r.mAP) for r in first if r.setting in ("clean", "query")]
    assert [(r.corruption, r.severity, r.mAP) for r in uncached.records] == cached_query, \
        "the same numbers without the cache and with other batch boundaries"
    assert all(r.num_queries == len(dataset.query) and 0.0 <= r.mAP <= 100.0 for r in result.records)

    summary = summary_of(first)
    grid = [r for r in first if r.setting == "query"]
    assert summary["query"]["mean"]["mAP"] == pytest.approx(np.mean([r.mAP for r in grid]))
    worst = min(grid, key=lambda r: r.mAP)
    assert (summary["query"]["worst"]["corruption"], summary["query"]["worst"]["mAP"]) == (worst.corruption, worst.mAP)
    assert summary["random"]["mAP"] == first[-1].mAP and summary["clean"]["mAP"] == first[0].mAP
    assert mean_corrupted_map(summary) == summary["query"]["mean"]["mAP"]
    direct = corruption_summary(str(tiny_checkpoint), dataset, None, FEW, [1, 3], seed=5, progress=False)
    assert set(direct) == {"clean", "query"} and direct["query"] == summary["query"], "one model, the same summary"


@pytest.mark.slow
def test_outputs(benchmark, dataset, tmp_path: Path) -> None:
    from PIL import Image

    from igoas.robustness.corruption_report import write_corruption_benchmark

    result, _ = benchmark
    written = write_corruption_benchmark(result, tmp_path, sample_image=dataset.query[0].path)
    assert sorted(path.name for path in written.values()) == [
        "corruption_heatmap.png", "corruption_samples.png", "corruptions.json", "corruptions.md"]
    data = json.loads(written["json"].read_text())
    assert set(data["summary"]) == {"a", "b"} and set(data["summary"]["a"]) == {"clean", "query", "both", "random"}
    assert len(data["results"]) == len(result.records)
    table = written["table"].read_text()
    assert "| a | corrupted query, clean gallery |" in table and "| rain |" in table
    with Image.open(written["heatmap"]) as heatmap, Image.open(written["samples"]) as samples:
        assert heatmap.size == (2 * 300 + 200, 470)
        assert samples.size == (3 * (64 + 6), 24 + 128 + 6), "clean plus the two corruptions in one row"


def test_training_augmentation() -> None:
    from igoas.data import build_transforms

    image = torch.from_numpy(_picture(64, 32)).permute(2, 0, 1).contiguous()
    plain = build_transforms(64, 32, train=True, flip=0.0)(image)
    always = build_transforms(64, 32, train=True, flip=0.0, corruption=1.0)
    torch.manual_seed(0)
    first = always(image)
    torch.manual_seed(0)
    assert torch.equal(always(image), first), "seeded by torch's generator"
    assert first.shape == plain.shape and not torch.equal(first, plain)
    from igoas.corruptions.augment import RandomCorruption

    small = torch.from_numpy(_picture(40, 20)).permute(2, 0, 1).contiguous()
    assert torch.equal(RandomCorruption(1.0)(small), small), "too small to corrupt: left as it is"
    never = build_transforms(64, 32, train=True, flip=0.0, corruption=0.0)
    assert torch.equal(never(image), plain)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        build_transforms(64, 32, train=True, corruption=1.5)


def test_missing_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path,
                                        synthetic_root: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from igoas.corruptions import library
    from igoas.utils.extras import MissingExtraError

    monkeypatch.setitem(sys.modules, "imagecorruptions", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "imagecorruptions.corruptions", None)
    library.imagecorruptions.cache_clear()
    try:
        with pytest.raises(MissingExtraError, match=r"pip install 'igoas\[corruptions\]'"):
            corrupt(_picture(), "fog", 1, seed=0)
        assert main(["robustness", str(tiny_checkpoint), "--suite", "corruptions", "--dataset", "synthetic",
                     "--root", str(synthetic_root), "--corruptions", "fog", "--severities", "1", "--settings",
                     "query", "--workers", "2", "--no-progress", "--out", str(tmp_path)]) == 2
        error = capsys.readouterr().err
        assert "igoas[corruptions]" in error and "Traceback" not in error
    finally:
        library.imagecorruptions.cache_clear()


@pytest.mark.slow
def test_cli(tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path,
             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "corruptions"
    assert main(["robustness", str(tiny_checkpoint), "--suite", "corruptions", "--dataset", "synthetic", "--root",
                 str(synthetic_root), "--corruptions", "contrast", "--severities", "2", "--settings", "query,random",
                 "--workers", "0", "--no-progress", "--out", str(out)]) == 0
    assert f"wrote {out / 'corruptions.md'}" in capsys.readouterr().out
    data = json.loads((out / "corruptions.json").read_text())
    assert [(r["setting"], r["corruption"]) for r in data["results"]] == [
        ("clean", "clean"), ("query", "contrast"), ("random", "random")]
    assert data["settings"]["settings"] == ["query", "random"] and set(SETTINGS) >= {"query", "random"}
    assert main(["robustness", str(tiny_checkpoint), "--suite", "corruptions", "--dataset", "synthetic", "--root",
                 str(synthetic_root), "--corruptions", "smog", "--out", str(out)]) == 2
    assert "smog" in capsys.readouterr().err


@pytest.mark.slow
def test_a_stopped_benchmark_resumes_from_its_finished_conditions(dataset, tiny_checkpoint: Path,
                                                                  tmp_path: Path) -> None:
    from igoas.robustness.corruption_records import FINISHED_NAME

    finished = tmp_path / FINISHED_NAME
    settings = dict(seed=5, batch_size=16, progress=False)
    whole = corruption_benchmark([tiny_checkpoint], dataset, ["contrast"], [2], ["query", "both"],
                                 finished=finished, **settings)
    lines = finished.read_text().splitlines()
    assert [json.loads(line)["setting"] for line in lines] == ["clean", "query", "both"], "one line per condition"
    finished.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])   # stopped while writing the third
    said: list[str] = []
    resumed = corruption_benchmark([tiny_checkpoint], dataset, ["contrast"], [2], ["query", "both"],
                                   finished=finished, log=said.append, **settings)
    assert resumed.records == whole.records
    assert said[0].endswith(f"2 condition(s) already scored in {finished}: not run again")
    assert [line.split()[1:3] for line in said[1:]] == [["both", "contrast"]], "only the unfinished condition ran"
    with pytest.raises(ConfigError, match=r"other settings \(they differ in seed\); delete that file"):
        corruption_benchmark([tiny_checkpoint], dataset, ["contrast"], [2], ["query"], finished=finished,
                             **{**settings, "seed": 6})


@pytest.mark.slow
def test_cli_prints_each_condition_without_a_bar(tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from igoas.robustness.corruption_records import FINISHED_NAME

    out = tmp_path / "corruptions"
    arguments = ["robustness", str(tiny_checkpoint), "--suite", "corruptions", "--dataset", "synthetic", "--root",
                 str(synthetic_root), "--corruptions", "contrast", "--severities", "2", "--settings", "query",
                 "--workers", "0", "--no-progress", "--out", str(out)]
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert re.search(r"query\s+contrast\s+s2\s+R1", printed), printed
    assert len((out / FINISHED_NAME).read_text().splitlines()) == 2
    assert main(arguments) == 0
    assert "2 condition(s) already scored" in capsys.readouterr().out
