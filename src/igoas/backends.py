"""Inference back ends of `ReIDModel`: PyTorch itself, or the same network compiled by OpenVINO.

On a CPU, OpenVINO runs the network faster than PyTorch eager at fp32 with the same
numbers (cosine to PyTorch fp32 1.0; 2x and more in the runs so far, see
docs/benchmarks.md), and faster still at bf16 on CPUs that compute bf16 natively. The network is exported with `torch.export`
(dynamic batch size) and converted in memory when the model is built; no file is written.

`auto` picks OpenVINO only where it was measured to pay and is exact at fp32: a CPU
device on an x86 processor with AVX-512 (`torch.backends.cpu.get_cpu_capability()`),
with OpenVINO installed (the `openvino` extra); PyTorch everywhere else, including
AVX2-only CPUs, where the speed-up has not been measured.
"""
from __future__ import annotations

import importlib.util
from typing import Any

import torch

from igoas.errors import ConfigError, IgoasError

BACKENDS = ("pytorch", "openvino", "auto")
# CPU capabilities where OpenVINO was measured faster than PyTorch at fp32 (docs/benchmarks.md).
OPENVINO_MEASURED_CAPABILITIES = ("AVX512",)
# igoas precision -> OpenVINO's INFERENCE_PRECISION_HINT
OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """'pytorch' | 'openvino' | 'auto' -> the back end that will run, with a clear error where one cannot."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    on_cpu = torch.device(device).type == "cpu"
    if backend == "auto":
        measured = torch.backends.cpu.get_cpu_capability() in OPENVINO_MEASURED_CAPABILITIES
        return "openvino" if on_cpu and measured and openvino_available() else "pytorch"
    if backend == "openvino":
        if not on_cpu:
            raise ConfigError(f"backend 'openvino' runs on the CPU only, not on {device}; use backend 'pytorch'")
        if not openvino_available():
            raise IgoasError("backend 'openvino' needs OpenVINO: pip install 'igoas[openvino]'")
    return backend


class OpenVINONetwork(torch.nn.Module):
    """A network compiled by OpenVINO, standing in for it wherever igoas embeds images.

    Takes the normalised float32 B x 3 x H x W batch the PyTorch network takes and returns
    its features; it holds no parameters, so moving it or autocast around it changes nothing.
    """

    def __init__(self, compiled: Any, network: torch.nn.Module) -> None:
        super().__init__()
        self.compiled = compiled
        # what callers read from an igoas network: the embedding's layout and size
        self.suppression = getattr(network, "suppression", False)
        self.feature_dim = getattr(network, "feature_dim", 0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        inputs = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.compiled(inputs)[0].copy())


def openvino_module(network: torch.nn.Module, height: int, width: int, precision: str) -> OpenVINONetwork:
    """`network` (normalised B x 3 x H x W in, features out) compiled by OpenVINO for this CPU.

    `precision` is 'fp32' or 'bf16' (bf16 only pays on CPUs with native bf16). OpenVINO
    uses as many threads as PyTorch is set to.
    """
    import openvino

    if precision not in OPENVINO_PRECISIONS:
        raise ConfigError(f"backend 'openvino' runs fp32 or bf16, not {precision!r}")
    was_training = network.training
    example = torch.zeros(2, 3, height, width)
    try:
        with torch.no_grad():
            program = torch.export.export(network.eval(), (example,),
                                          dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    finally:
        network.train(was_training)
    compiled = openvino.Core().compile_model(openvino.convert_model(program), "CPU", {
        "INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision],
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
    })
    return OpenVINONetwork(compiled, network)
