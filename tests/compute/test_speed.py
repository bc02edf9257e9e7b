"""Precision and memory-format options: what `auto` picks, and that the fast paths stay accurate."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from igoas.compute import speed
from igoas.utils.errors import ConfigError
from igoas.model import build_model


@pytest.fixture
def native_bf16(monkeypatch):
    def set_native(value: bool) -> None:
        monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: value)

    return set_native


def test_auto_precision_on_cpu_only_picks_native_bf16(native_bf16) -> None:
    native_bf16(True)
    assert speed.resolve_precision("auto", "cpu") == "bf16"
    assert speed.resolve_channels_last("auto", "cpu") is True
    native_bf16(False)
    assert speed.resolve_precision("auto", "cpu") == "fp32"
    assert speed.resolve_channels_last("auto", "cpu") is False
    assert speed.resolve_precision("bf16", "cpu") == "bf16"  # explicit request is honoured


@pytest.mark.parametrize("machine", ["x86_64", "AMD64"])
def test_auto_precision_ignores_emulated_avx512_bf16(monkeypatch, machine: str) -> None:
    # Skylake-SP .. Ice Lake-SP: oneDNN says bf16 is supported, but only emulates it
    monkeypatch.setattr(speed.platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert speed.resolve_precision("auto", "cpu") == "fp32"
    assert speed.resolve_channels_last("auto", "cpu") is False
    for native in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, native, lambda: True)
        assert speed.resolve_precision("auto", "cpu") == "bf16"


def test_auto_precision_on_arm_asks_onednn(monkeypatch) -> None:
    monkeypatch.setattr(speed.platform, "machine", lambda: "aarch64")
    for native in (True, False):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda native=native: native)
        assert speed.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")


@pytest.mark.skipif(not torch.cpu._is_amx_tile_supported(), reason="no AMX on this CPU")
def test_auto_precision_picks_bf16_on_amx() -> None:
    assert speed.resolve_precision("auto", "cpu") == "bf16"


def test_auto_precision_on_cuda_follows_the_requested_device(monkeypatch) -> None:
    capabilities = {0: (7, 5), 1: (8, 0)}  # a T4 next to an A100; bf16 on the T4 is emulated
    current = {"index": 1}

    def capability(device=None) -> tuple[int, int]:
        index = None if device is None else torch.device(device).index
        return capabilities[current["index"] if index is None else index]

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what torch says for both
    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    assert speed.resolve_precision("auto", "cuda:0") == "fp16"
    assert speed.resolve_precision("auto", "cuda:1") == "bf16"
    assert speed.resolve_precision("auto", "cuda") == "bf16"
    current["index"] = 0
    assert speed.resolve_precision("auto", "cuda") == "fp16"
    assert speed.resolve_channels_last("auto", "cuda") is True


@pytest.mark.parametrize(("architecture", "expected"), [
    ("gfx90a:sramecc+:xnack-", "bf16"), ("gfx942", "bf16"), ("gfx1100", "bf16"),  # MI250, MI300, RX 7900
    ("gfx906", "fp16"), ("gfx1030", "fp16")])                                   # MI50, RX 6800: emulated
def test_auto_precision_on_rocm_follows_the_architecture(monkeypatch, architecture, expected) -> None:
    class Properties:
        gcnArchName = architecture

    monkeypatch.setattr(torch.version, "hip", "6.2")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: Properties())
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 4))  # gfx94x reads 9.4: no guide
    assert speed.resolve_precision("auto", "cuda") == expected


def test_bad_values_raise() -> None:
    with pytest.raises(ConfigError):
        speed.resolve_precision("int8", "cpu")
    with pytest.raises(ConfigError, match="CUDA"):
        speed.resolve_precision("fp16", "cpu")
    with pytest.raises(ConfigError):
        speed.resolve_channels_last("sometimes", "cpu")
    assert speed.resolve_channels_last(True, "cpu") is True


def test_autocast_switches_matmul_dtype() -> None:
    a = torch.randn(4, 4)
    with speed.autocast("cpu", "fp32"):
        assert (a @ a).dtype == torch.float32
    with speed.autocast("cpu", "bf16"):
        assert (a @ a).dtype == torch.bfloat16


def test_grad_scaler_only_for_fp16() -> None:
    assert not speed.grad_scaler("cpu", "bf16").is_enabled()
    assert not speed.grad_scaler("cpu", "fp32").is_enabled()


def test_prepare_model_for_inference_sets_eval_and_memory_format() -> None:
    model = build_model("baseline", 3, backbone="resnet18").train()
    prepared = speed.prepare_model_for_inference(model, "fp32", channels_last=True)
    assert prepared is model and not model.training
    assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    images = speed.to_memory_format(torch.randn(2, 3, 32, 16), True)
    assert images.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not speed.cpu_has_native_bf16(), reason="bf16 is emulated on this CPU and too slow for a unit test")
def test_bf16_channels_last_embeddings_match_fp32() -> None:
    torch.manual_seed(0)
    model = build_model("igoas", 5, backbone="resnet18").eval()
    images = torch.randn(4, 3, 64, 32)
    with torch.inference_mode():
        reference = model(images)
    speed.prepare_model_for_inference(model, "bf16", channels_last=True)
    with speed.inference_context("cpu", "bf16"):
        fast = model(speed.to_memory_format(images, True))
    assert fast.dtype == torch.float32  # embeddings come back in fp32 for retrieval
    assert F.cosine_similarity(fast.float(), reference, dim=1).min() > 0.99
