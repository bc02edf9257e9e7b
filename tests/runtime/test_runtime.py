"""`igoas.runtime`: an exported model embeds detections without PyTorch, as `ReIDModel.embed_crops` does."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from factories import tiny_checkpoint

from igoas.artifacts.provenance import sha256_of
from igoas.deploy.export import export_model, exported_info
from igoas.deploy.inference import ReIDModel
from igoas.runtime import load
from igoas.utils.errors import IgoasError

pytestmark = pytest.mark.slow  # each export traces the network with torch.export: about 20 s

BOXES = np.array([[10, 5, 50, 100], [60.4, 20.2, 90.6, 70.0], [-20, -5, 40, 90], [120, 60, 400, 300],
                  [0, 0, 160, 120], [70, 10, 75, 20], [30, 30, 110, 118]])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("runtime") / "tiny.pth")


@pytest.fixture(scope="module")
def onnx_file(checkpoint: Path) -> Path:
    result = export_model(checkpoint, "onnx", checkpoint.with_suffix(".onnx"))
    assert result.check.passed
    return result.path


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.min(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def test_the_metadata_describes_the_artefact(onnx_file: Path, checkpoint: Path) -> None:
    info = exported_info(onnx_file)
    assert info["input_size"] == [64, 32] and info["channel_order"] == "RGB" and info["embedding_size"] == 512
    assert info["mean"] == [0.485, 0.456, 0.406] and info["std"] == [0.229, 0.224, 0.225]
    assert (info["method"], info["backbone"]) == ("baseline", "resnet18") and info["igoas_version"]
    assert info["checkpoint_sha256"] == sha256_of(checkpoint) and info["preprocess"]["height"] == 64
    onnx = pytest.importorskip("onnx")
    batch = onnx.load(str(onnx_file)).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")  # the batch stays dynamic


def test_runtime_agrees_with_the_pytorch_crop_path(onnx_file: Path, checkpoint: Path, frame: np.ndarray) -> None:
    reid = ReIDModel.from_checkpoint(checkpoint, device="cpu", precision="fp32", channels_last=False)
    embedder = load(onnx_file)
    rows = embedder.embed(frame, BOXES, max_batch=3)  # more boxes than one batch
    assert rows.shape == (len(BOXES), 512) and rows.dtype == np.float32
    assert _min_cosine(rows, reid.embed_crops(frame, BOXES)) >= 0.9999
    bgr = embedder.embed(np.ascontiguousarray(frame[:, :, ::-1]), BOXES, bgr=True)
    np.testing.assert_allclose(bgr, rows, atol=1e-6)
    assert embedder.embed(frame, []).shape == (0, 512)
    with pytest.raises(IgoasError, match="box 1 .* lies outside"):
        embedder.embed(frame, [[0, 0, 10, 10], [500, 500, 600, 600]])
    with pytest.raises(IgoasError, match="uint8"):
        embedder.embed(frame.astype(np.float32), BOXES)


def test_runtime_imports_and_embeds_without_torch(onnx_file: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "import igoas.runtime\n"
        f"embedder = igoas.runtime.load({str(onnx_file)!r})\n"
        "frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)\n"
        "rows = embedder.embed(frame, [[10, 5, 50, 100], [-5, 0, 200, 60]], bgr=True, max_batch=1)\n"
        "print(rows.shape, round(float(np.linalg.norm(rows, axis=1).min()), 4))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(2, 512) 1.0"


def test_openvino_export_runs_in_the_runtime(checkpoint: Path, onnx_file: Path, frame: np.ndarray) -> None:
    pytest.importorskip("openvino")
    result = export_model(checkpoint, "openvino", checkpoint.with_suffix(".xml"))
    assert result.check.passed and result.path.with_suffix(".bin").is_file()
    assert exported_info(result.path)["embedding_size"] == 512
    assert _min_cosine(load(result.path).embed(frame, BOXES), load(onnx_file).embed(frame, BOXES)) >= 0.99999
