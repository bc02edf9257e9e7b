"""`igoas extract --shards` and `igoas.deploy.sharded_extraction`: fixed-size shards, any world size, resumable."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from igoas.artifacts.checkpoint import load_checkpoint, save_checkpoint
from igoas.cli import main
from igoas.deploy.extraction import extract, folder_images
from igoas.deploy.inference import ReIDModel
from igoas.deploy.sharded_extraction import (MANIFEST, extract_sharded, image_list_fingerprint, open_sharded,
                                             plan_shards, shards_of_rank)
from igoas.utils.errors import IgoasError

SHARD_SIZE, BATCH = 3, 2  # 4 shards of 11 images (the last one shorter); batches that do not divide the shards


@pytest.fixture(scope="module")
def images(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 synthetic gallery images in two sub-folders plus one unreadable file."""
    from igoas.data import build_dataset

    folder = tmp_path_factory.mktemp("gallery")
    for number, sample in enumerate(build_dataset("synthetic", synthetic_root).gallery[:10]):
        (folder / f"part{number % 2}").mkdir(exist_ok=True)
        shutil.copy(sample.path, folder / f"part{number % 2}" / Path(sample.path).name)
    (folder / "part1" / "0999_c1s1_000001_00.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return folder


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> ReIDModel:
    return ReIDModel.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")


def _sharded(model: ReIDModel, images: Path, out: Path, **settings):
    return extract_sharded(model, folder_images(images), out, shard_size=SHARD_SIZE, batch_size=BATCH, threads=1,
                           **settings)


def test_plan_is_fixed_size_whatever_the_world_size(images: Path) -> None:
    shards = plan_shards(11, 3)
    assert [(s.start, s.stop) for s in shards] == [(0, 3), (3, 6), (6, 9), (9, 11)]
    assert [s.name for s in shards] == ["shard-00000", "shard-00001", "shard-00002", "shard-00003"]
    for world_size in (1, 2, 3, 5):
        owned = [shards_of_rank(shards, rank, world_size) for rank in range(world_size)]
        assert sorted(s.index for share in owned for s in share) == [0, 1, 2, 3]
        assert all(s.index % world_size == rank for rank, share in enumerate(owned) for s in share)
    assert plan_shards(0, 3) == [] and len(plan_shards(4096 * 2 + 1)) == 3
    with pytest.raises(IgoasError, match="at least 1"):
        plan_shards(5, 0)
    listed = folder_images(images)
    assert listed.paths == sorted(listed.paths) and len(listed.paths) == 11
    assert image_list_fingerprint(listed) == image_list_fingerprint(folder_images(images))
    renamed = type(listed)(listed.paths[:-1] + [listed.paths[-1] + "x"], listed.pids, listed.camids, "")
    assert image_list_fingerprint(renamed) != image_list_fingerprint(listed)


def test_manifest_checksums_and_reader(model: ReIDModel, images: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    run = _sharded(model, images, out)
    assert (run.computed, run.reused, run.shards) == ([0, 1, 2, 3], [], 4)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["checkpoint_sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert manifest["image_list"] == image_list_fingerprint(folder_images(images))
    assert manifest["settings"] == {"shard_size": 3, "batch_size": 2, "threads": 1, "precision": "fp32",
                                    "backend": "pytorch", "device_type": "cpu"}
    assert [s["name"] for s in manifest["shards"]] == [f"shard-0000{i}" for i in range(4)]
    assert (manifest["rows"], manifest["skipped"]) == (10, 1)
    for record in manifest["shards"]:
        assert hashlib.sha256((out / record["embeddings"]).read_bytes()).hexdigest() == record["sha256"]
        assert json.loads((out / record["metadata"]).read_text())["sha256"] == record["sha256"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST] + [f"shard-0000{i}.{ext}" for i in range(4) for ext in ("npy", "json")])  # no staging files left

    sharded = open_sharded(out)
    whole = extract(model, folder_images(images), batch_size=BATCH)
    assert len(sharded) == 10 and sharded.embedding_dim == whole.embeddings.shape[1]
    assert sharded.paths == whole.paths and list(sharded.skipped) == whole.bad_paths
    np.testing.assert_array_equal(sharded.pids, whole.pids)
    np.testing.assert_array_equal(sharded.camids, whole.camids)
    parts = list(sharded.iter_embeddings())
    assert all(isinstance(part, np.memmap) and part.dtype == np.float32 for part in parts)
    bad = folder_images(images).paths.index(whole.bad_paths[0])
    assert [len(part) for part in parts] == [3 - (start <= bad < start + 3) for start in (0, 3, 6)] + [2 - (bad >= 9)]
    np.testing.assert_allclose(np.concatenate(parts), whole.embeddings, atol=1e-5)
    merged = sharded.write_merged(tmp_path / "merged.npy")
    np.testing.assert_array_equal(np.load(merged), np.concatenate(parts))
    features = sharded.to_features()
    np.testing.assert_array_equal(features.embeddings, np.load(merged))
    assert features.bad_paths == whole.bad_paths and features.metadata["checkpoint_sha256"] == manifest["checkpoint_sha256"]

    sharded.verify()
    with open(out / "shard-00002.npy", "r+b") as handle:  # one flipped bit in the last row
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 1]))
    with pytest.raises(IgoasError, match="shard-00002.npy: missing or does not match its checksum"):
        sharded.verify()
    (out / MANIFEST).unlink()
    with pytest.raises(IgoasError, match="unfinished: re-run the same"):
        open_sharded(out)


def test_resume_embeds_only_the_missing_and_damaged_shards(model: ReIDModel, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    _sharded(model, images, out)
    before = np.load(open_sharded(out).write_merged(tmp_path / "before.npy"))
    untouched = (out / "shard-00000.npy").stat().st_mtime_ns
    (out / "shard-00001.npy").unlink()  # killed between its two files
    (out / "shard-00001.json").unlink()
    truncated = (out / "shard-00003.npy").read_bytes()
    (out / "shard-00003.npy").write_bytes(truncated[: len(truncated) // 2])  # cut off
    (out / MANIFEST).unlink()  # the run was killed before the end

    run = _sharded(model, images, out)
    assert (run.computed, run.reused) == ([1, 3], [0, 2])
    assert (out / "shard-00000.npy").stat().st_mtime_ns == untouched
    np.testing.assert_array_equal(np.load(open_sharded(out).write_merged(tmp_path / "after.npy")), before)
    again = _sharded(model, images, out)  # a finished folder: nothing to do
    assert (again.computed, again.reused) == ([], [0, 1, 2, 3])


@pytest.mark.slow
def test_another_checkpoint_list_or_setting_is_refused(model: ReIDModel, images: Path, tiny_checkpoint: Path,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "shards"
    _sharded(model, images, out)
    (out / MANIFEST).unlink()  # refused by the shards themselves, not only by the manifest
    payload = load_checkpoint(tiny_checkpoint)
    payload["epoch"] = 2  # same network, another file
    other = save_checkpoint(tmp_path / "other.pth", payload)
    assert main(["extract", str(other), str(images), "--shards", str(out), "--shard-size", "3", "--batch-size", "2",
                 "--device", "cpu", "--workers", "0", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "shard-00000.json: made with another checkpoint" in error and "Write to a new folder" in error
    with pytest.raises(IgoasError, match="made from another image list .*11 images"):
        extract_sharded(model, folder_images(images / "part0"), out, shard_size=3, batch_size=2, threads=1)
    with pytest.raises(IgoasError, match="made with other settings: batch_size 2 \\(now 4\\)"):
        extract_sharded(model, folder_images(images), out, shard_size=3, batch_size=4, threads=1)
    with pytest.raises(IgoasError, match="threads 1 \\(now 2\\)"):  # the last bits depend on the thread count
        extract_sharded(model, folder_images(images), out, shard_size=3, batch_size=2, threads=2)
    assert not (out / MANIFEST).exists()


@pytest.mark.slow
def test_one_two_and_three_processes_give_the_same_bits(images: Path, tiny_checkpoint: Path, model: ReIDModel,
                                                        tmp_path: Path) -> None:
    merged, manifests = [], []
    for world_size in (1, 2, 3):
        out = tmp_path / f"world{world_size}"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                   str(world_size), "-m", "igoas", "extract", str(tiny_checkpoint), str(images), "--shards", str(out),
                   "--shard-size", str(SHARD_SIZE), "--batch-size", str(BATCH), "--device", "cpu", "--workers", "0",
                   "--no-progress"]
        done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "wrote 4 shard(s)" in done.stdout
        for rank in range(world_size):
            owned = len(range(rank, 4, world_size))
            assert f"rank {rank}/{world_size} on cpu" in done.stderr and f"embedded {owned} shard(s)" in done.stderr
        manifests.append({k: v for k, v in json.loads((out / MANIFEST).read_text()).items() if k != "source"})
        merged.append(open_sharded(out).write_merged(tmp_path / f"merged{world_size}.npy").read_bytes())
    assert merged[0] == merged[1] == merged[2]  # the very same bytes, checksums included
    assert manifests[0] == manifests[1] == manifests[2]
    in_process = _sharded(model, images, tmp_path / "in_process")  # the Python API, one thread, same bits
    assert open_sharded(in_process.folder).write_merged(tmp_path / "api.npy").read_bytes() == merged[0]


@pytest.mark.parametrize("flag", [["--shard-size", "8"], ["--threads", "2"]])
def test_shard_options_without_shards_are_refused(flag: list[str], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "features.npz"
    assert main(["extract", str(tmp_path / "model.pth"), str(tmp_path), "--out", str(out), *flag]) == 2
    assert f"{flag[0]} only apply with --shards" in capsys.readouterr().err and not out.exists()
