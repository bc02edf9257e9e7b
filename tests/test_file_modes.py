"""Every kind of file and folder igoas writes gets the mode a plain `open()` or `mkdir` would
give under the user's umask (shared servers use 022 or 002; private setups 077)."""
from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

UMASKS = [0o022, 0o077]


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_modes(root: Path, mask: int) -> None:
    """Every file under `root` is 0666 & ~mask and every folder (root included) 0777 & ~mask."""
    wrong = [f"{path.relative_to(root.parent)}: {oct(mode(path))}" for path in [root, *root.rglob("*")]
             if mode(path) != (0o777 if path.is_dir() else 0o666) & ~mask]
    assert not wrong, f"umask {oct(mask)}: " + ", ".join(wrong)


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_the_umask_is_read_without_being_changed(mask: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting the umask, even for an instant, would race with any thread creating a file."""
    from igoas.utils.fileio import current_umask

    if not Path("/proc/self/status").is_file():
        pytest.skip("no /proc: the umask can only be read by setting it")
    def refuse(value: int) -> int:
        raise AssertionError("current_umask() changed the process umask")

    with umask(mask), monkeypatch.context() as patched:
        patched.setattr(os, "umask", refuse)
        assert current_umask() == mask


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_atomic_writes_and_staging_folders_follow_the_umask(tmp_path: Path, mask: int) -> None:
    from igoas.artifacts.checkpoint import save_checkpoint
    from igoas.utils.fileio import atomic_write, staging_place, write_json
    from igoas.retrieval.features_file import Features, save_features
    from igoas.viz import plot_cmc_curves

    out = tmp_path / "out"
    with umask(mask):
        write_json(out / "metrics.json", {"mAP": 1.0})
        atomic_write(out / "table.md", lambda handle: handle.write(b"| a |\n"))
        save_checkpoint(out / "checkpoints" / "last.pth", {"epoch": 1})
        features = Features(embeddings=np.zeros((2, 4), np.float32), paths=["a.jpg", "b.jpg"],
                            pids=np.array([1, 2]), camids=np.array([0, 1]), metadata={})
        save_features(out / "features.npz", features)
        save_features(out / "features.safetensors", features)
        from igoas.retrieval import GalleryIndex

        GalleryIndex.build(features).save(out / "index" / "gallery.faiss")
        plot_cmc_curves({"run": np.linspace(0.5, 1.0, 20)}, out / "figures" / "cmc.png")
        staged = staging_place(out, ".staging-", folder=True)
        (staged / "inside.txt").write_text("x")
    assert_modes(out, mask)


@pytest.mark.slow
@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_a_training_run_and_a_rendered_dataset_follow_the_umask(tmp_path: Path, mask: int) -> None:
    from igoas.config import load_config
    from igoas.data import render_synthetic
    from igoas.training.trainer import train

    with umask(mask):
        root = render_synthetic(tmp_path / "data", num_ids=4, seed=0, size="tiny", image_size=(32, 16))
        train(load_config(None, [
            "data.dataset=synthetic", f"data.root={root}", "data.height=32", "data.width=16", "data.batch_size=8",
            "data.num_instances=2", "data.num_workers=0", "model.backbone=resnet18", "model.pretrained=false",
            "train.epochs=1", "train.fixbase_epochs=0", "train.device=cpu", "train.precision=fp32",
            "train.progress_bar=false", f"train.output_dir={tmp_path / 'run'}", "eval.every=1",
            "eval.num_workers=0"]))
        from igoas.viz import write_html_report

        write_html_report(tmp_path / "run")
    assert_modes(tmp_path / "data", mask)
    assert_modes(tmp_path / "run", mask)
