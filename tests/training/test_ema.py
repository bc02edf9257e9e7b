"""The EMA of the weights (`train.ema_decay`): averaged, evaluated, deployed, resumed exactly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_trainer import EPOCHS, tiny_run

from igoas.artifacts.checkpoint import load_checkpoint, model_from_checkpoint
from igoas.config import load_config
from igoas.training.state import ModelEma
from igoas.training.trainer import train
from igoas.utils.errors import ConfigError

DECAY = "train.ema_decay=0.5"  # far from 1, so a few steps already move the average


@pytest.fixture(scope="module")
def ema_run(synthetic_root: Path, random_trunk: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run with the EMA on."""
    out = tmp_path_factory.mktemp("ema") / "uninterrupted"
    assert train(tiny_run(synthetic_root, random_trunk, out, DECAY)).finished
    return out


def test_the_average_follows_parameters_and_copies_buffers() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = ModelEma(model, decay=0.75)
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    model(torch.randn(4, 2))  # moves the BatchNorm statistics
    ema.update(model)
    for average, before, now in zip(ema.module.parameters(), start, model.parameters()):
        assert torch.allclose(average, 0.75 * before + 0.25 * now)
        assert not average.requires_grad
    for kept, current in zip(ema.module.buffers(), model.buffers()):
        assert torch.equal(kept, current)


@pytest.mark.parametrize("decay", ["1.0", "-0.1", "1.5"])
def test_a_decay_outside_zero_to_one_is_refused_by_name(decay: str) -> None:
    with pytest.raises(ConfigError, match=r"train\.ema_decay must be in \[0, 1\)"):
        load_config(None, [f"train.ema_decay={decay}"])


@pytest.mark.slow
def test_checkpoints_deploy_the_average_and_keep_the_raw_weights_for_resume(ema_run: Path) -> None:
    last, best = (load_checkpoint(ema_run / "checkpoints" / name) for name in ("last.pth", "best.pth"))
    assert last["config"]["train"]["ema_decay"] == 0.5
    weight = "stem.0.weight"
    assert not torch.equal(last["model"][weight], last["train_model"][weight])  # averaged, not the raw weights
    for name, tensor in last["model"].items():
        if "running_" in name or name.endswith("num_batches_tracked"):  # buffers are copied, not averaged
            assert torch.equal(tensor, last["train_model"][name]), name
    assert "train_model" not in best and "optimizer" not in best  # weights for use
    model, _ = model_from_checkpoint(best)  # the artifacts loader deploys the average
    assert torch.equal(model.state_dict()[weight], best["model"][weight])


@pytest.mark.slow
def test_training_evaluates_the_average(ema_run: Path, tmp_path: Path) -> None:
    from igoas.cli import main

    out = tmp_path / "eval.json"
    assert main(["eval", "--weights", str(ema_run / "checkpoints/last.pth"), "--out", str(out)]) == 0
    final = json.loads((ema_run / "metrics.json").read_text())
    assert json.loads(out.read_text())["mAP"] == pytest.approx(final["mAP"], abs=1e-9)


@pytest.mark.slow
def test_resume_with_the_ema_on_is_bit_identical(ema_run: Path, synthetic_root: Path, random_trunk: Path,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    stopped = train(tiny_run(synthetic_root, random_trunk, out, DECAY, "train.stop_after_iters=6"))
    assert not stopped.finished and load_checkpoint(out / "checkpoints/last.pth")["batch"] == 2  # mid-epoch 2
    with pytest.raises(ConfigError, match=r"train\.ema_decay \(0\.5 -> 0\.9\)"):
        train(resume=out, overrides=["train.ema_decay=0.9"])  # the average in the checkpoint belongs to 0.5
    assert train(resume=out).finished
    reference, resumed = (load_checkpoint(run / "checkpoints/last.pth") for run in (ema_run, out))
    assert resumed["iteration"] == reference["iteration"] == EPOCHS * 4
    for entry in ("model", "train_model"):
        for key, tensor in reference[entry].items():
            assert torch.equal(tensor, resumed[entry][key]), (entry, key)
    assert resumed["metrics"] == reference["metrics"]


@pytest.mark.slow
def test_decay_zero_is_the_ema_off(synthetic_root: Path, random_trunk: Path, tmp_path: Path) -> None:
    runs = {}
    for name, extra in (("off", ()), ("zero", ("train.ema_decay=0.0",))):
        out = tmp_path / name
        train(tiny_run(synthetic_root, random_trunk, out, "train.stop_after_iters=2", "eval.every=0", *extra))
        runs[name] = load_checkpoint(out / "checkpoints/last.pth")
    assert set(runs["zero"]) == set(runs["off"]) and "train_model" not in runs["zero"]
    for key, tensor in runs["off"]["model"].items():
        assert torch.equal(tensor, runs["zero"]["model"][key]), key
