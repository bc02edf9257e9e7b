"""`igoas export --int8`: static int8 ONNX calibrated on person crops, checked against a cosine bound."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from factories import tiny_checkpoint

from igoas.cli import main
from igoas.deploy.export import Quantization, export_model, exported_info
from igoas.runtime import load
from igoas.utils.errors import IgoasError

pytestmark = pytest.mark.slow  # each int8 export traces the network with torch.export and calibrates: ~6 s


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("int8") / "tiny.pth")


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve person-shaped crops of smooth random colour fields (sizes other than 64x32, so they are resized)."""
    folder = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(0)
    (folder / "nested").mkdir()
    for index in range(12):
        small = rng.integers(0, 256, (4, 2, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((40 + index, 100 + 3 * index), Image.Resampling.BILINEAR)
        image.save(folder / ("nested" if index % 3 == 0 else ".") / f"crop_{index:02d}.jpg")
    return folder


def _export(arguments: list[str]) -> tuple[int, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export", *arguments])
    return code, printed.getvalue()


@pytest.fixture(scope="module")
def int8_file(checkpoint: Path, crops: Path) -> tuple[Path, str]:
    out = checkpoint.with_name("tiny_int8.onnx")
    code, printed = _export([str(checkpoint), "--format", "onnx", "--int8", "--calibration", str(crops),
                             "--calibration-count", "8", "--out", str(out)])
    assert code == 0, printed
    return out, printed


def test_int8_export_is_quantised_checked_and_carries_its_metadata(int8_file: tuple[Path, str],
                                                                   checkpoint: Path) -> None:
    import onnx

    out, printed = int8_file
    cosine = float(re.search(r"min cosine (\S+) \(bound 0.98\)", printed).group(1))
    assert "check passed: onnx int8" in printed and "4 held-out crops" in printed and 0.98 <= cosine <= 1
    graph = onnx.load(str(out)).graph
    operators = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= operators
    assert any(initializer.data_type == onnx.TensorProto.INT8 for initializer in graph.initializer)
    info = exported_info(out)
    assert info["input_size"] == [64, 32] and info["embedding_size"] == 512 and info["method"] == "baseline"
    assert info["quantization"]["calibration_images"] == 8 and info["quantization"]["format"] == "QDQ"
    assert info["quantization"]["min_cosine_bound"] == 0.98 and info["checkpoint_sha256"]


def test_the_torch_free_runtime_loads_the_int8_file_unchanged(int8_file: tuple[Path, str]) -> None:
    from igoas.deploy.inference import ReIDModel

    out, _ = int8_file
    embedder = load(out)
    frame = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes = np.array([[10, 5, 50, 100], [60, 20, 90, 110]])
    rows = embedder.embed(frame, boxes)
    assert rows.shape == (2, 512) and np.allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-4)
    reference = ReIDModel.from_checkpoint(out.with_name("tiny.pth"), precision="fp32", channels_last=False)
    assert np.min(np.sum(rows * reference.embed_crops(frame, boxes), axis=1)) > 0.9


def test_an_impossible_cosine_bound_refuses_and_writes_nothing(checkpoint: Path, crops: Path, tmp_path: Path) -> None:
    out = tmp_path / "refused.onnx"
    code, printed = _export([str(checkpoint), "--int8", "--calibration", str(crops), "--calibration-count", "8",
                             "--int8-min-cosine", "1", "--out", str(out)])
    assert code == 1 and "check FAILED: onnx int8" in printed and "(bound 1)" in printed
    assert "nothing was written" in printed and not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arguments, message", [
    (["--int8", "--calibration", "{empty}"], "no image files"),
    (["--int8", "--calibration", "{missing}"], "not a folder"),
    (["--int8", "--format", "openvino", "--calibration", "{crops}"], "ONNX exports only"),
    (["--int8", "--format", "torchscript", "--calibration", "{crops}"], "ONNX exports only"),
    (["--int8"], "--int8 needs --calibration"),
    (["--calibration", "{crops}"], "--calibration is for --int8 only"),
])
def test_clear_errors_before_any_work(arguments: list[str], message: str, checkpoint: Path, crops: Path,
                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    folders = {"empty": tmp_path / "empty", "missing": tmp_path / "missing", "crops": crops}
    code = main(["export", str(checkpoint), *(a.format(**folders) for a in arguments),
                 "--out", str(tmp_path / "model.onnx")])
    assert code != 0 and message in capsys.readouterr().err
    assert not (tmp_path / "model.onnx").exists()


def test_the_api_refuses_a_bound_outside_zero_to_one(checkpoint: Path, crops: Path) -> None:
    with pytest.raises(IgoasError, match="lies in"):
        export_model(checkpoint, "onnx", quantization=Quantization(crops, 8, 1.5))
