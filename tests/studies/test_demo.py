"""`igoas demo --quick`: the README's main command end to end on the tiny synthetic set."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from omegaconf import OmegaConf

import igoas.studies.demo
from igoas.cli import main
from igoas.studies.demo import run_demo
from igoas.utils.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _ReachedTraining(Exception):
    """Raised by the stand-in trainer: the demo got as far as training."""


@pytest.fixture
def demo_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The demo with stand-ins for the dataset, the networks, evaluation and training; the
    stand-in trainer records its arguments and stops the demo there."""
    calls: dict[str, Any] = {}

    def fake_train(cfg: Any, **kwargs: Any) -> None:
        calls["train"] = (cfg, kwargs)
        raise _ReachedTraining

    def fake_build_model(**kwargs: Any) -> object:
        calls["build_model"] = kwargs
        return object()

    monkeypatch.setattr(igoas.studies.demo, "build_dataset", lambda *a, **k: SimpleNamespace(
        train=[], query=[], gallery=[], num_train_pids=3))
    monkeypatch.setattr(igoas.studies.demo, "build_model", fake_build_model)
    monkeypatch.setattr(igoas.studies.demo, "_evaluate", lambda *a: ({}, {}))
    monkeypatch.setattr(igoas.studies.demo, "set_cpu_threads", lambda count: None)
    monkeypatch.setattr(igoas.studies.demo, "train", fake_train)
    return calls


def test_demo_out_folder_reaches_training_as_given(tmp_path: Path, demo_calls: dict[str, Any]) -> None:
    out = tmp_path / "runs a: yes #1"  # YAML would cut a comment, read a mapping or a boolean
    with pytest.raises(_ReachedTraining):
        main(["demo", "--quick", "--out", str(out), "--data", str(tmp_path / "data #2")])
    cfg, _ = demo_calls["train"]
    assert cfg.train.output_dir == str(out) and cfg.data.root == str((tmp_path / "data #2").resolve())


def test_demo_refuses_a_folder_holding_another_run(tmp_path: Path, demo_calls: dict[str, Any]) -> None:
    best = tmp_path / "run" / "checkpoints" / "best.pth"
    best.parent.mkdir(parents=True)
    best.write_bytes(b"weights of a real run")
    with pytest.raises(ConfigError, match="--overwrite"):
        run_demo(tmp_path / "run", quick=True)
    assert "train" not in demo_calls and best.read_bytes() == b"weights of a real run"
    with pytest.raises(_ReachedTraining):  # told to, it replaces that run
        run_demo(tmp_path / "run", quick=True, overwrite=True)
    assert demo_calls["train"][1]["overwrite"]


def test_demo_replaces_its_own_earlier_run(tmp_path: Path, demo_calls: dict[str, Any]) -> None:
    for _ in range(2):
        demo_calls.clear()
        with pytest.raises(_ReachedTraining):
            run_demo(tmp_path / "demo", quick=True)
        assert demo_calls["train"][1]["overwrite"]
        (tmp_path / "demo" / "checkpoints").mkdir(exist_ok=True)  # what the first demo's training left
        (tmp_path / "demo" / "checkpoints" / "last.pth").write_bytes(b"demo weights")
    # a folder of a demo from before the marker existed is recognised by its report
    old = tmp_path / "old_demo"
    old.mkdir()
    (old / "metrics.json").write_text(json.dumps({"mAP": 1.0, "untrained": {"mAP": 0.5}}))
    with pytest.raises(_ReachedTraining):
        run_demo(old, quick=True)


def test_a_run_trained_over_a_demo_folder_is_no_longer_the_demos(tmp_path: Path,
                                                                   demo_calls: dict[str, Any]) -> None:
    from igoas.artifacts.run_dir import RunDir, claim_run_folder

    with pytest.raises(_ReachedTraining):
        run_demo(tmp_path / "demo", quick=True)
    assert RunDir(tmp_path / "demo").demo_marker.is_file(), "marked even when training stops early"
    with claim_run_folder(tmp_path / "demo", overwrite=True):  # what `igoas train --overwrite` does
        (tmp_path / "demo" / "config.yaml").write_text("data: {dataset: market1501}\n")
    assert not RunDir(tmp_path / "demo").demo_marker.exists()
    demo_calls.clear()
    with pytest.raises(ConfigError, match="--overwrite"):
        run_demo(tmp_path / "demo", quick=True)
    assert "train" not in demo_calls


def test_untrained_reference_starts_from_the_runs_pretrained_weights(tmp_path: Path,
                                                                     demo_calls: dict[str, Any]) -> None:
    trunk = tmp_path / "pretrain" / "trunk.pth"
    with pytest.raises(_ReachedTraining):
        run_demo(tmp_path / "demo", quick=True, overrides=[f"model.pretrained={trunk}"])
    assert demo_calls["build_model"]["pretrained"] == str(trunk) == demo_calls["train"][0].model.pretrained


@pytest.mark.slow
def test_quick_demo_writes_the_report_folder(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    monkeypatch.chdir(tmp_path)  # --data relative to the working folder, as `igoas demo` passes data/synthetic
    # the session's tiny set has the quick preset's parameters, so it is reused, not re-rendered
    assert main(["demo", "--quick", "--out", str(out), "--data", os.path.relpath(synthetic_root)]) == 0
    printed = capsys.readouterr().out
    assert "untrained" in printed and "holistic" in printed and "mAP" in printed

    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["mAP"] <= 100.0 and 0.0 <= metrics["untrained"]["mAP"] <= 100.0
    assert set(metrics["query_sets"]) == {"query", "holistic"}
    for figure in ("figures/cmc.png", "figures/ranked_lists.png"):
        assert (out / figure).read_bytes()[:8] == PNG_MAGIC
    assert "<table" in (out / "report.html").read_text()
    assert any(path.name.startswith("events.out.tfevents") for path in (out / "tensorboard").iterdir())
    assert (out / "checkpoints" / "last.pth").is_file() and (out / "config.yaml").is_file()
    # the run records the data folder absolute: evaluating its checkpoint elsewhere reads the same images
    assert OmegaConf.load(out / "config.yaml").data.root == str(synthetic_root.resolve())
