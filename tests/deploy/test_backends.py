"""Inference back ends: how `auto` chooses, and OpenVINO giving PyTorch's embeddings."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from igoas.deploy import backends
from igoas.utils.errors import ConfigError, IgoasError
from igoas.deploy.inference import ReIDModel


def test_unknown_backend_and_openvino_off_the_cpu_are_refused() -> None:
    with pytest.raises(ConfigError, match="backend must be one of"):
        backends.resolve_backend("tensorrt", "cpu")
    with pytest.raises(ConfigError, match="CPU only"):
        backends.resolve_backend("openvino", "cuda")
    assert backends.resolve_backend("pytorch", "cpu") == "pytorch"


@pytest.mark.parametrize("capability, installed, expected", [
    ("AVX512", True, "openvino"),
    ("AVX2", True, "pytorch"),  # not measured there: auto stays with PyTorch
    ("AVX512", False, "pytorch"),
    ("DEFAULT", True, "pytorch"),
])
def test_auto_picks_openvino_only_where_measured(monkeypatch: pytest.MonkeyPatch, capability: str, installed: bool,
                                                 expected: str) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(backends, "openvino_available", lambda: installed)
    assert backends.resolve_backend("auto", "cpu") == expected
    assert backends.resolve_backend("auto", "cuda") == "pytorch"


def test_openvino_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    with pytest.raises(IgoasError, match=r"pip install 'igoas\[openvino\]'"):
        backends.resolve_backend("openvino", "cpu")


@pytest.mark.slow  # exporting and compiling the network takes tens of seconds on 2 busy cores
def test_openvino_embeddings_match_pytorch_fp32(tiny_checkpoint: Path, synthetic_root: Path) -> None:
    pytest.importorskip("openvino")
    files = sorted(str(p) for p in (synthetic_root / "query").glob("*.jpg"))
    reference = ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32").embed(files, batch_size=4)
    compiled = ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32", backend="openvino")
    assert compiled.backend == "openvino" and "backend=openvino" in repr(compiled)
    embeddings = compiled.embed(files, batch_size=3)  # a batch size not used when compiling
    assert embeddings.shape == reference.shape and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(embeddings * reference, axis=1))) > 0.99999
    result = compiled.embed_files(files[:2] + ["missing.jpg"])
    assert result.paths == files[:2] and list(result.bad) == ["missing.jpg"]


@pytest.mark.slow  # one export and conversion of the tiny network
def test_converted_models_are_cached_by_content(tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    import torch

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    files = sorted(str(p) for p in (synthetic_root / "query").glob("*.jpg"))[:4]
    first = ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32", backend="openvino").embed(files)
    cached = sorted(p.name for p in (tmp_path / "igoas" / "openvino").iterdir())
    assert len(cached) == 2 and {Path(name).suffix for name in cached} == {".xml", ".bin"}

    def refuse(*args, **kwargs):
        raise AssertionError("the network was exported again despite its cached conversion")

    monkeypatch.setattr(torch.export, "export", refuse)
    again = ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32", backend="openvino").embed(files)
    np.testing.assert_array_equal(again, first)  # weights kept at fp32 in the cache
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model = ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32")
    with torch.no_grad():
        next(model.network.parameters()).add_(0.01)  # other weights: another key, converted anew
    key = backends.network_key(model.network, model.preprocess_config.height, model.preprocess_config.width)
    assert f"{key}.xml" not in cached


@pytest.mark.slow
def test_network_key_covers_pooling_and_model_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    from igoas.model import build_model

    avg = build_model("igoas", 3, backbone="resnet18", global_pooling="avg")
    pooled_by_max = build_model("igoas", 3, backbone="resnet18", global_pooling="max")
    pooled_by_max.load_state_dict(avg.state_dict())  # same weights, another graph
    key = backends.network_key(avg, 32, 16)
    assert backends.network_key(pooled_by_max, 32, 16) != key
    assert backends.network_key(avg, 32, 16) == key

    # heads.py defines no Module class, yet its pooling functions are part of the graph
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes",
                        lambda path: read_bytes(path) + (b"# edited" if path.name == "heads.py" else b""))
    assert backends.network_key(avg, 32, 16) != key


def test_a_cache_that_cannot_be_written_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    openvino = pytest.importorskip("openvino")

    def disk_full(*args, **kwargs):
        raise RuntimeError("Exception from src/core/src/pass/serialize.cpp: No space left on device")

    monkeypatch.setattr(openvino, "save_model", disk_full)
    backends._save_conversion(object(), tmp_path / "cache" / "key.xml")
    assert "warning: cannot cache the OpenVINO model" in capsys.readouterr().err
    assert list((tmp_path / "cache").iterdir()) == []  # no staging folder left behind
