"""`igoas export`: ONNX and TorchScript files with a dynamic batch that reproduce the PyTorch model."""
from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from igoas.cli import main
from igoas.artifacts.checkpoint import load_checkpoint
from igoas.utils.errors import IgoasError
import igoas.deploy.export
from igoas.deploy.export import EmbeddingGraph, ExportCheck, check_export, export_model, exported_info, load_exported
from igoas.deploy.inference import ReIDModel


@pytest.fixture(scope="module")
def reid(tiny_checkpoint: Path) -> ReIDModel:
    return ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32", channels_last=False)


@pytest.fixture(scope="module", params=["onnx", "torchscript"])
def exported(request: pytest.FixtureRequest, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """One export per format through the CLI: (format, file, what the command printed)."""
    format = request.param
    out = tmp_path_factory.mktemp(format) / ("model.onnx" if format == "onnx" else "model.pt")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", str(tiny_checkpoint), "--format", format, "--out", str(out)]) == 0
    return format, out, printed.getvalue()


@pytest.mark.slow
def test_export_reproduces_the_model_for_any_batch_size(exported, reid: ReIDModel, tiny_checkpoint: Path) -> None:
    _, out, printed = exported
    distance = float(re.search(r"max cosine distance (\S+)", printed).group(1))
    assert "check passed" in printed and 0 <= distance <= 1e-4

    run = load_exported(out)
    generator = torch.Generator().manual_seed(7)
    for batch in (1, 4):  # neither size was used to build or check the file
        images = torch.rand(batch, 3, 64, 32, generator=generator)
        exported_embeddings = run(images.numpy())
        assert exported_embeddings.shape == (batch, reid.embedding_dim)
        np.testing.assert_allclose(exported_embeddings, reid.embed(images), atol=1e-4)
    stored = load_checkpoint(tiny_checkpoint)["preprocess"]
    info = exported_info(out)
    assert info["preprocess"]["height"] == stored["height"] and info["preprocess"]["mean"] == list(stored["mean"])
    assert info["model_spec"]["name"] == "igoas"


def test_check_detects_a_different_model(exported, reid: ReIDModel, tiny_checkpoint: Path) -> None:
    format, out, _ = exported
    other = ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32", channels_last=False)
    with torch.no_grad():
        for parameter in other.network.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    check = check_export(out, EmbeddingGraph(other.network, other.preprocess_config), reid.preprocess_config, format)
    assert not check.passed and check.max_cosine_distance > 1e-3


def test_failed_check_exits_non_zero_and_keeps_the_previous_file(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "model.pt"
    out.write_bytes(b"a previous, good export")
    checked = []

    def failing_check(path, graph, preprocess, format, batch_sizes, tolerance):
        checked.append(Path(path))
        assert Path(path).parent == tmp_path and Path(path).suffix == ".pt" and Path(path) != out
        return ExportCheck(tuple(batch_sizes), 0.5, tolerance)

    monkeypatch.setattr(igoas.deploy.export, "check_export", failing_check)
    assert main(["export", str(tiny_checkpoint), "--format", "torchscript", "--out", str(out)]) == 1
    assert "check FAILED" in capsys.readouterr().out and checked
    assert out.read_bytes() == b"a previous, good export" and list(tmp_path.iterdir()) == [out]


@pytest.mark.slow
@pytest.mark.parametrize("interruption", [KeyboardInterrupt(), IgoasError("the embeddings contain NaN or Inf")])
def test_an_interrupted_check_leaves_no_unchecked_file(reid: ReIDModel, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, interruption) -> None:
    out = tmp_path / "model.pt"
    out.write_bytes(b"a previous, good export")

    def interrupted_check(*args, **kwargs):
        raise interruption

    monkeypatch.setattr(igoas.deploy.export, "check_export", interrupted_check)
    with pytest.raises(type(interruption)):
        export_model(reid, "torchscript", out)
    assert out.read_bytes() == b"a previous, good export" and list(tmp_path.iterdir()) == [out]
    out.unlink()
    with pytest.raises(type(interruption)):
        export_model(reid, "torchscript", out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("options", "message"), [
    (["--check-batch-sizes", "0"], r"check batch sizes \[0\] \(--check-batch-sizes\): each must be .* 1 or more"),
    (["--check-batch-sizes", "3", "-2"], r"check batch sizes \[3, -2\] \(--check-batch-sizes\)"),
    (["--tolerance", "-1"], r"tolerance -1.0 \(--tolerance\): .* 0 or more; give e.g. 0.0001"),
    (["--tolerance", "nan"], r"tolerance nan \(--tolerance\): .* must be a finite number"),
    (["--opset", "17"], r"opset 17 \(--opset\): the ONNX exporter writes opsets 18 to 23 .* leave the default 18"),
    (["--opset", "26"], r"opset 26 \(--opset\)"),
])
def test_bad_options_are_refused_before_any_work(tiny_checkpoint: Path, tmp_path: Path, options: list[str],
                                                 message: str, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def no_work(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded despite a bad option")

    monkeypatch.setattr(ReIDModel, "from_checkpoint", no_work)
    out = tmp_path / "model.onnx"
    assert main(["export", str(tiny_checkpoint), "--out", str(out), *options]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("igoas export: error:") and "\n" not in err and re.search(message, err), err
    assert not out.exists()


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(IgoasError, match="unknown export suffix"):
        load_exported(tmp_path / "model.tflite")
    with pytest.raises(IgoasError, match="no such exported model"):
        load_exported(tmp_path / "model.onnx")


def test_export_never_overwrites_its_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"precious")
    with pytest.raises(IgoasError, match="overwrite the checkpoint"):
        export_model(checkpoint, "torchscript")
    assert checkpoint.read_bytes() == b"precious"


def test_an_export_removes_what_killed_exports_of_its_target_left(reid: ReIDModel, tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = tmp_path / f".model.pt.{finished.stdout.strip()}.k3j2.pt"  # its process is gone: SIGKILL left it
    running = tmp_path / f".model.pt.{os.getppid()}.a8f1.pt"               # an export still running
    other_target = tmp_path / f".other.pt.{finished.stdout.strip()}.x1.pt"
    for path in (killed, running, other_target):
        path.write_bytes(b"partial")
    result = export_model(reid, "torchscript", out)
    assert result.check.passed
    assert sorted(tmp_path.iterdir()) == sorted([out, running, other_target])
