"""`igoas export`: ONNX and TorchScript files with a dynamic batch that reproduce the PyTorch model."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from igoas.cli import main
from igoas.artifacts.checkpoint import load_checkpoint
from igoas.errors import IgoasError
from igoas.export import EmbeddingGraph, check_export, export_model, exported_info, load_exported
from igoas.inference import ReIDModel


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


def test_failed_check_exits_non_zero_and_removes_the_file(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.pt"
    # a negative tolerance cannot be met, so this exercises the failure path of a correct export
    assert main(["export", str(tiny_checkpoint), "--format", "torchscript", "--out", str(out), "--tolerance", "-1"]) == 1
    assert "check FAILED" in capsys.readouterr().out and not out.exists()


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
