"""Speed options shared by training, inference and the benchmark: precision and memory format.

`auto` only picks a reduced precision where the hardware runs it natively: bf16 on an x86
CPU with AVX-512 BF16 or AMX (on ARM, one with the BF16 extension), bf16 on CUDA devices
of compute capability 8.0 or newer (on ROCm, AMD architectures with bf16 matrix cores),
else fp16 on CUDA, else fp32. Elsewhere bf16 is
emulated and many times slower than fp32, so `auto` never chooses it there. oneDNN's own
`_is_mkldnn_bf16_supported` and `torch.cuda.is_bf16_supported()` count emulation
(any AVX-512 CPU; V100/T4), which is why neither is asked on x86 or CUDA.

`tf32` is fp32 storage with TensorFloat-32 matrix products and cuDNN convolutions on CUDA
(what "fp32" meant on Ampere GPUs under PyTorch 1.7, where both were on by default: the
authors' published run); on a CPU it is plain fp32. `fp32` on CUDA turns both off, so it
is IEEE fp32 throughout. torch holds these as process-wide switches: `set_tf32` sets them
for a training run (its backward passes included), and `autocast` sets them for the
forward passes it wraps and puts the previous values back on exit.
"""
from __future__ import annotations

import contextlib
import platform
from typing import Iterator

import torch
from torch import nn

from igoas.config import PRECISIONS
from igoas.utils.errors import ConfigError

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _device_type(device: torch.device | str) -> str:
    return torch.device(device).type


_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware: AVX-512 BF16 or AMX on x86 (oneDNN
    reports any AVX-512 CPU, which only emulates it); on other CPUs oneDNN's check, which
    on ARM asks for the BF16 extension."""
    if platform.machine().lower() in _X86:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


# AMD architectures with bf16 matrix instructions: MI100 (gfx908), MI200 (gfx90a), MI300
# and later (gfx94x, gfx95x), RDNA 3 and 4 (gfx11xx, gfx12xx). Vega and RDNA 2 emulate it.
_ROCM_BF16_ARCHITECTURES = ("gfx908", "gfx90a", "gfx94", "gfx95", "gfx11", "gfx12")


def has_native_bf16(device: torch.device | str) -> bool:
    """True when `device` computes bf16 in hardware: a CPU as `cpu_has_native_bf16`, a CUDA
    device of compute capability 8.0 or newer (7.x only emulates it), a ROCm device of an
    architecture in _ROCM_BF16_ARCHITECTURES (ROCm's "capability" is the gfx version, which
    does not order that way); the one check `auto` and the benchmarks use."""
    device = torch.device(device)
    if device.type == "cuda" and torch.version.hip:
        architecture = torch.cuda.get_device_properties(device).gcnArchName
        return architecture.startswith(_ROCM_BF16_ARCHITECTURES)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and cpu_has_native_bf16()


def _auto_precision(device: torch.device | str) -> str:
    if has_native_bf16(device):
        return "bf16"
    return "fp16" if _device_type(device) == "cuda" else "fp32"


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """'auto' | 'fp32' | 'tf32' | 'bf16' | 'fp16' -> the concrete precision for `device`
    (tf32 is fp32 anywhere but on CUDA)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return _auto_precision(device)
    if precision == "tf32" and _device_type(device) != "cuda":
        return "fp32"
    if precision == "fp16" and _device_type(device) == "cpu":
        raise ConfigError("precision 'fp16' is only supported on CUDA devices; use 'bf16' or 'auto' on CPU")
    return precision


def set_tf32(device: torch.device | str, precision: str) -> None:
    """On CUDA, turn TF32 matrix products and cuDNN convolutions on for `tf32` and off for
    `fp32` (process-wide); other precisions and devices leave torch's settings alone."""
    resolved = resolve_precision(precision, device)
    if _device_type(device) == "cuda" and resolved in ("fp32", "tf32"):
        torch.backends.cuda.matmul.allow_tf32 = resolved == "tf32"
        torch.backends.cudnn.allow_tf32 = resolved == "tf32"


@contextlib.contextmanager
def _tf32_switches(device: torch.device | str, precision: str) -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    set_tf32(device, precision)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for forward passes: torch's autocast for bf16/fp16; for
    fp32 and tf32 no autocast, with the TF32 switches set (CUDA) for its duration."""
    resolved = resolve_precision(precision, device)
    if resolved in ("fp32", "tf32"):
        return _tf32_switches(device, resolved)
    return torch.autocast(device_type=_device_type(device), dtype=DTYPES[resolved])


def resolve_channels_last(channels_last: bool | str, device: torch.device | str, precision: str = "auto") -> bool:
    """'auto' -> channels_last where it pays: CUDA, and CPUs running bf16 (oneDNN's
    blocked bf16 convolutions want NHWC); plain fp32 on CPU keeps NCHW."""
    if isinstance(channels_last, bool):
        return channels_last
    if channels_last != "auto":
        raise ConfigError(f"channels_last must be true, false or 'auto', got {channels_last!r}")
    device_type = _device_type(device)
    return device_type == "cuda" or resolve_precision(precision, device) == "bf16"


def to_memory_format(tensor_or_model: torch.Tensor | nn.Module, channels_last: bool):
    """Convert a 4-d batch or a model to channels_last when asked (no-op otherwise)."""
    if not channels_last:
        return tensor_or_model
    if isinstance(tensor_or_model, nn.Module):
        return tensor_or_model.to(memory_format=torch.channels_last)
    return tensor_or_model.contiguous(memory_format=torch.channels_last)


def compile_network(model: nn.Module, backend: str = "inductor") -> nn.Module:
    """Compile every top-level child of an igoas network in place (`torch.compile`); returns it.

    Per child rather than the whole network: the occlusion draws each batch's rectangle as
    Python numbers, which a whole-network graph would specialise on and recompile for at
    every new position; the children hold all the computation and see tensors only.
    Their compiled calls share one code object, whose cache dynamo caps at
    `recompile_limit` entries in all (8), so the cap is raised to 8 per child: past it,
    the remaining children would silently run eagerly.
    """
    children = list(model.children())
    config = torch._dynamo.config
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # the name before 2.6
    setattr(config, limit, max(getattr(config, limit), 8 * len(children)))
    for child in children:
        child.compile(backend=backend)
    return model


def grad_scaler(device: torch.device | str, precision: str) -> torch.amp.GradScaler:
    """Loss scaling, enabled only for fp16 (bf16 has fp32's range and needs none)."""
    resolved = resolve_precision(precision, device)
    return torch.amp.GradScaler(_device_type(device), enabled=resolved == "fp16")


def prepare_model_for_inference(model: nn.Module, precision: str = "fp32", channels_last: bool | str = False,
                                device: torch.device | str | None = None) -> nn.Module:
    """Eval mode and the memory format inference will use; returns the same model.

    Weights stay fp32: run the forward under `inference_context(device, precision)`;
    autocast runs convolutions and linear layers in reduced precision and the model
    returns its embedding in fp32.
    """
    if device is None:
        device = next(model.parameters()).device
    model.eval()
    return to_memory_format(model, resolve_channels_last(channels_last, device, precision))


@contextlib.contextmanager
def inference_context(device: torch.device | str, precision: str) -> Iterator[None]:
    """`torch.inference_mode` plus `autocast`: what every embedding extraction runs under."""
    with torch.inference_mode(), autocast(device, precision):
        yield
