"""The artefacts layer: run-folder names, the input recipe, the shared checkpoint entries, the one resize."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from igoas.artifacts.checkpoint import checkpoint_payload, load_checkpoint, model_from_checkpoint, save_checkpoint
from igoas.imaging.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from igoas.artifacts.run_dir import RunDir
from igoas.utils.errors import CheckpointError, IgoasError


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
    code = ("import sys, igoas.config, igoas.imaging.preprocess, igoas.artifacts.run_dir; "
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_checkpoint_damaged_after_saving_is_refused(tmp_path: Path) -> None:
    """torch's zip reader does not check CRCs: one flipped weight byte would load silently."""
    from igoas.model import build_model

    model = build_model("baseline", num_classes=3, backbone="resnet18")
    with torch.no_grad():
        model.global_classifier.weight.fill_(0.5)  # a byte pattern easy to find in the file
    path = save_checkpoint(tmp_path / "c.pth", checkpoint_payload(model, Preprocess(16, 8)))
    data = bytearray(path.read_bytes())
    at = data.index(np.float32(0.5).tobytes() * 64) + 130
    data[at] ^= 0x01
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(bytes(data))
    assert torch.load(damaged, weights_only=True)["model"]["global_classifier.weight"].ne(0.5).sum() == 1  # loads "fine"
    with pytest.raises(CheckpointError, match="damaged.pth: the checkpoint's content does not match the SHA-256"):
        load_checkpoint(damaged)
    load_checkpoint(path)  # the intact file still loads


def test_the_payload_digest_ignores_key_order_and_sees_every_value() -> None:
    from igoas.artifacts.digest import payload_digest

    base = {"a": torch.arange(4, dtype=torch.float32), "b": {2: (1, 2.5, None), "x": [True, "s"]}}
    reordered = {"b": {"x": [True, "s"], 2: (1, 2.5, None)}, "a": torch.arange(4, dtype=torch.float32)}
    assert payload_digest(base) == payload_digest(reordered)
    changes = [
        {**base, "a": torch.arange(4, dtype=torch.float64)},        # dtype
        {**base, "a": torch.arange(4, dtype=torch.float32).reshape(2, 2)},  # shape
        {**base, "b": {2: [1, 2.5, None], "x": [True, "s"]}},      # tuple vs list
        {**base, "b": {2: (1, 2.5, None), "x": [1, "s"]}},         # True vs 1
    ]
    assert len({payload_digest(base), *map(payload_digest, changes)}) == 1 + len(changes)
