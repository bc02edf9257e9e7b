"""The artefacts layer: run-folder names, the input recipe, the shared checkpoint entries, the one resize."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from igoas.artifacts.checkpoint import checkpoint_payload, load_checkpoint, model_from_checkpoint, save_checkpoint
from igoas.artifacts.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from igoas.artifacts.run_dir import RunDir
from igoas.errors import CheckpointError, IgoasError


def test_run_dir_names_every_file_and_finds_the_run_of_a_checkpoint(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.last_checkpoint == tmp_path / "checkpoints" / "last.pth"
    assert run.best_checkpoint == tmp_path / "checkpoints" / "best.pth"
    assert [p.name for p in (run.config, run.final_metrics, run.train_log, run.metrics_log, run.report)] == [
        "config.yaml", "metrics.json", "train_log.jsonl", "metrics.jsonl", "report.html"]
    assert RunDir.of_checkpoint(run.best_checkpoint) == run
    assert RunDir.of_checkpoint(tmp_path / "loose.pth") is None


def test_preprocess_resolves_from_a_config_a_payload_and_a_model() -> None:
    from igoas.config import load_config

    cfg = load_config("synthetic_demo_quick")
    from_config = Preprocess.resolve(cfg)
    assert (from_config.height, from_config.width) == (cfg.data.height, cfg.data.width)
    assert from_config.mean == tuple(cfg.data.mean) and from_config.interpolation == "bilinear"
    assert Preprocess.resolve({"preprocess": from_config.to_dict()}) == from_config
    assert Preprocess.resolve(from_config.to_dict()) == from_config

    class Holder:
        preprocess_config = from_config

    assert Preprocess.resolve(Holder()) is from_config
    assert Preprocess(8, 4) == Preprocess(8, 4, IMAGENET_MEAN, IMAGENET_STD, "bilinear")
    with pytest.raises(CheckpointError, match="no 'preprocess' entry"):
        Preprocess.resolve({"model": {}}, "x.pth")
    with pytest.raises(IgoasError, match="unknown interpolation"):
        Preprocess(8, 4, interpolation="lanczos")


def test_checkpoint_payload_round_trips(tmp_path: Path) -> None:
    from igoas.model import build_model

    model = build_model("baseline", num_classes=3, backbone="resnet18")
    payload = checkpoint_payload(model, Preprocess(16, 8), epoch=2, iteration=5, best={"mAP": 1.0})
    path = save_checkpoint(tmp_path / "c.pth", payload)
    loaded = load_checkpoint(path)
    assert loaded["format"] == "igoas" and loaded["epoch"] == 2 and loaded["best"] == {"mAP": 1.0}
    assert Preprocess.resolve(loaded) == Preprocess(16, 8)
    rebuilt, _ = model_from_checkpoint(path)
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values()))


def test_training_and_inference_resize_identically() -> None:
    from igoas.data import build_transforms

    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 50, 23), dtype=torch.uint8, generator=generator)
    recipe = Preprocess(32, 16)
    through_data = build_transforms(32, 16, train=False)(image)
    through_inference = recipe(image)[0]
    np.testing.assert_allclose(through_data.numpy(), through_inference.numpy(), atol=1e-5)


def test_config_and_the_recipe_import_without_torch() -> None:
    code = ("import sys, igoas.config, igoas.artifacts.preprocess, igoas.artifacts.run_dir; "
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
