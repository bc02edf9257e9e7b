"""`igoas extract` and `igoas.deploy.extraction`: folders and dataset splits to features files; bad images are not fatal."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from igoas.cli import main
from igoas.utils.errors import IgoasError
from igoas.deploy.extraction import extract, folder_images
from igoas.deploy.inference import ReIDModel
from igoas.retrieval import load_features


@pytest.fixture(scope="module")
def dataset(synthetic_root: Path):
    from igoas.data import build_dataset

    return build_dataset("synthetic", synthetic_root)


def test_folder_with_a_corrupt_image(
    tiny_checkpoint: Path, dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    sources = dataset.query[:3]
    for sample in sources[:2]:
        shutil.copy(sample.path, folder / Path(sample.path).name)
    shutil.copy(sources[2].path, folder / "nested" / "someone.jpg")  # not a Market-style name
    corrupt = folder / "0099_c2s1_000001_00.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "features.npz"
    assert main(["extract", str(tiny_checkpoint), str(folder), "--out", str(out), "--workers", "0", "--no-progress"]) == 0

    captured = capsys.readouterr()
    assert str(corrupt) in captured.err and "wrote 3 embeddings" in captured.out
    features = load_features(out)
    assert features.bad_paths == [str(corrupt)]
    assert sorted(features.paths) == sorted([str(folder / Path(s.path).name) for s in sources[:2]]
                                            + [str(folder / "nested" / "someone.jpg")])
    by_path = dict(zip(features.paths, zip(features.pids, features.camids)))
    for sample in sources[:2]:
        assert by_path[str(folder / Path(sample.path).name)] == (sample.pid, sample.camid)
    assert by_path[str(folder / "nested" / "someone.jpg")] == (-1, -1)
    np.testing.assert_allclose(np.linalg.norm(features.embeddings, axis=1), 1.0, atol=1e-5)
    assert features.metadata["checkpoint"] == str(tiny_checkpoint.resolve())
    assert features.metadata["checkpoint_sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()


@pytest.mark.slow
def test_dataset_split_matches_direct_embedding(tiny_checkpoint: Path, synthetic_root: Path, dataset, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """By default extract embeds as `igoas eval` does (fp32, the automatic device), and says so."""
    from igoas.artifacts.checkpoint import model_from_checkpoint
    from igoas.compute.distributed import resolve_device
    from igoas.evaluation.embedding import embed
    from igoas.compute.runtime import Runtime

    out = tmp_path / "query.safetensors"
    assert main(["extract", str(tiny_checkpoint), str(synthetic_root), "--dataset", "synthetic", "--split", "query",
                 "--batch-size", "7", "--workers", "0", "--no-progress", "--out", str(out)]) == 0
    assert f"embedding on {resolve_device('auto')}, fp32" in capsys.readouterr().err
    features = load_features(out)
    network, payload = model_from_checkpoint(tiny_checkpoint)
    evaluation = embed(network, dataset.query, payload, Runtime.resolve("auto", "fp32"))
    unit = evaluation.embeddings / np.linalg.norm(evaluation.embeddings, axis=1, keepdims=True)
    np.testing.assert_allclose(features.embeddings, unit, atol=1e-5)
    assert features.paths == [s.path for s in dataset.query]
    np.testing.assert_array_equal(features.pids, [s.pid for s in dataset.query])
    np.testing.assert_array_equal(features.camids, [s.camid for s in dataset.query])
    direct = ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32").embed(features.paths)
    np.testing.assert_allclose(features.embeddings, direct, atol=1e-5)
    assert features.metadata["preprocess"]["height"] == 64 and features.bad_paths == []


def test_python_api_with_worker_processes(tiny_checkpoint: Path, dataset, tmp_path: Path) -> None:
    folder = tmp_path / "few"
    folder.mkdir()
    for sample in dataset.gallery[:5]:
        shutil.copy(sample.path, folder)
    (folder / "broken.png").write_bytes(b"")
    model = ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32")
    in_process = extract(model, folder_images(folder), batch_size=2)
    with_workers = extract(model, folder_images(folder), batch_size=2, num_workers=2)
    assert in_process.paths == with_workers.paths and len(in_process) == 5
    assert with_workers.bad_paths == [str(folder / "broken.png")]
    np.testing.assert_allclose(with_workers.embeddings, in_process.embeddings, atol=1e-6)


def test_clear_errors(tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(IgoasError, match="no image files"):
        folder_images(tmp_path)
    assert main(["extract", str(tmp_path / "absent.pth"), str(synthetic_root), "--out", str(tmp_path / "f.npz")]) == 2
    assert "no such" in capsys.readouterr().err
    assert main(["extract", str(tiny_checkpoint), str(synthetic_root), "--dataset", "synthetic", "--split", "nope",
                 "--out", str(tmp_path / "f.npz")]) == 2
    assert "no split 'nope'" in capsys.readouterr().err


def _market_copy(dataset, folder: Path) -> Path:
    """A few synthetic images in the Market-1501 layout plus an unreadable gallery image."""
    for sub, samples in (("bounding_box_train", dataset.train[:2]), ("query", dataset.query[:2]),
                         ("bounding_box_test", [s for s in dataset.gallery if s.pid in {q.pid for q in dataset.query[:2]}][:3])):
        (folder / sub).mkdir(parents=True)
        for sample in samples:
            shutil.copy(sample.path, folder / sub)
    corrupt = folder / "bounding_box_test" / "0999_c1s1_000001_00.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return corrupt


@pytest.mark.slow
def test_ranking_a_checkpoint_fails_on_unreadable_images_unless_skipping(
    tiny_checkpoint: Path, dataset, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str]
) -> None:
    from igoas.data import build_dataset
    from igoas.deploy.extraction import checkpoint_cmc, query_and_gallery

    corrupt = _market_copy(dataset, tmp_path / "copy")
    copy = build_dataset("market1501", tmp_path / "copy")
    model = ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32")
    with pytest.raises(IgoasError, match=r"1 image\(s\) of the gallery cannot be read[\s\S]*0999_c1s1[\s\S]*skip"):
        query_and_gallery(model, copy)
    with pytest.raises(IgoasError, match="0999_c1s1"):
        checkpoint_cmc(model, copy, max_rank=3)
    with pytest.raises(IgoasError, match="on_error"):
        query_and_gallery(model, copy, on_error="ignore")
    query, gallery = query_and_gallery(model, copy, on_error="skip")
    assert len(query) == 2 and len(gallery) == len(copy.gallery) - 1 and gallery.bad_paths == [str(corrupt)]
    assert "0999_c1s1" in caplog.text and "left out" in caplog.text
    data = ["--dataset", "market1501", "--root", str(tmp_path / "copy"), "--max-rank", "3"]
    assert main(["viz", "cmc", str(tiny_checkpoint), *data, "--out", str(tmp_path / "cmc.png")]) == 2
    assert "0999_c1s1" in capsys.readouterr().err and not (tmp_path / "cmc.png").exists()
    assert main(["viz", "cmc", str(tiny_checkpoint), *data, "--skip-unreadable", "--out", str(tmp_path / "cmc.png")]) == 0


def test_dataset_reader_options_on_the_command_line(tiny_checkpoint: Path, dataset, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "PartialREID"
    for folder, count in (("occluded_body_images", 3), ("partial_body_images", 2), ("whole_body_images", 1)):
        (root / folder).mkdir(parents=True)
        for index, sample in enumerate(dataset.query[:count]):
            shutil.copy(sample.path, root / folder / f"001_{index + 1:02d}.jpg")
    out = tmp_path / "query.npz"
    command = ["extract", str(tiny_checkpoint), str(tmp_path), "--dataset", "partial_reid", "--workers", "0",
               "--no-progress", "--out", str(out)]
    assert main([*command, "-o", "query_folder=partial_body_images"]) == 0
    features = load_features(out)
    assert len(features) == 2 and all("partial_body_images" in path for path in features.paths)
    assert "partial_reid_query_folder=partial_body_images" in features.metadata["source"]
    assert main([*command, "--option", "query_folder=occluded_body_images", "--split", "gallery"]) == 0
    assert len(load_features(out)) == 1
    assert main([*command, "-o", "split=half"]) == 2
    assert "split" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*command, "-o", "query_folder"])
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["extract", str(tiny_checkpoint), str(tmp_path), "-o", "split=half", "--out", str(out)]) == 2
    assert "--dataset" in capsys.readouterr().err


def test_a_reader_option_named_split_is_not_the_dataset_split(synthetic_root: Path, tmp_path: Path) -> None:
    from igoas.deploy.extraction import dataset_images

    root = tmp_path / "Occluded_REID"
    for kind in ("occluded_body_images", "whole_body_images"):
        for pid in (1, 90):
            (root / kind / f"{pid:03d}").mkdir(parents=True)
            (root / kind / f"{pid:03d}" / f"{pid:03d}_01.tif").write_bytes(b"")
    half = dataset_images("occluded_reid", tmp_path, "train", {"split": "half"})
    assert [Path(path).name for path in half.paths] == ["090_01.tif", "090_01.tif"]
    assert "occluded_reid_split=half" in half.description
