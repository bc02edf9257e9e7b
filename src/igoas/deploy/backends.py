"""Inference back ends of `ReIDModel`: PyTorch itself, or the same network compiled by OpenVINO.

OpenVINO computes the same numbers as PyTorch fp32 and, on the CPUs where it was measured
(docs/benchmarks.md), faster; bf16 is faster again where the CPU computes it natively. The
network is exported with `torch.export` (dynamic batch size) and converted when the model
is built. Exporting and converting are slow, so the converted model is cached (`$XDG_CACHE_HOME/igoas/openvino`, or
`~/.cache/igoas/openvino`) under a key made of everything that decides the graph: every
module's class, plain settings and the functions it calls through attributes (by qualified
name: the pooling options), the source of igoas.model and of every module class, every
weight and buffer, the input size and the torch and OpenVINO versions. A later build of the
same network reads it back; any change to the weights or the code makes a new key.

`auto` picks OpenVINO only where it was measured to pay and is exact at fp32: a CPU
device on an x86 processor with AVX-512 (`torch.backends.cpu.get_cpu_capability()`),
with OpenVINO installed (the `openvino` extra); PyTorch everywhere else, including
AVX2-only CPUs, where the speed-up has not been measured.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any

import torch

import igoas.model
from igoas.utils.errors import ConfigError, IgoasError
from igoas.utils.extras import optional
from igoas.utils.fileio import staging_place, user_cache_dir

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


def openvino_module(network: torch.nn.Module, height: int, width: int, precision: str,
                    cache_dir: str | os.PathLike[str] | None = None, cache: bool = True) -> OpenVINONetwork:
    """`network` (normalised B x 3 x H x W in, features out) compiled by OpenVINO for this CPU.

    `precision` is 'fp32' or 'bf16' (bf16 only pays on CPUs with native bf16). OpenVINO
    uses as many threads as PyTorch is set to. Converted models are kept in `cache_dir`
    (default: the user cache folder); `cache=False` converts every time and writes nothing.
    """
    openvino = optional("openvino", "the OpenVINO back end")

    if precision not in OPENVINO_PRECISIONS:
        raise ConfigError(f"backend 'openvino' runs fp32 or bf16, not {precision!r}")
    folder = Path(cache_dir) if cache_dir is not None else user_cache_dir("openvino")
    was_training = network.training
    network.eval()
    try:
        xml = folder / f"{network_key(network, height, width)}.xml" if cache else None
        converted = _cached_conversion(xml) if xml is not None else None
        if converted is None:
            converted = _convert(network, height, width)
            if xml is not None:
                _save_conversion(converted, xml)
    finally:
        network.train(was_training)
    compiled = openvino.Core().compile_model(converted, "CPU", {
        "INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision],
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
    })
    return OpenVINONetwork(compiled, network)


def _convert(network: torch.nn.Module, height: int, width: int) -> Any:
    openvino = optional("openvino", "the OpenVINO back end")

    example = torch.zeros(2, 3, height, width)
    with torch.no_grad():
        program = torch.export.export(network, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    return openvino.convert_model(program)


def _setting(value: Any) -> Any:
    """A module attribute as it enters the key: plain values as they are, functions (such
    as the pooling an igoas network calls) by their qualified name; None for the rest."""
    if isinstance(value, (bool, int, float, str, tuple, type(None))):
        return value
    if callable(value) and hasattr(value, "__qualname__") and not isinstance(value, torch.nn.Module):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    return None


def _graph_sources(network: torch.nn.Module) -> list[Path]:
    """The source files the graph is traced from: every file of igoas.model (plain functions
    such as the heads' pooling live there without a Module class), and the file of every
    module class and of every function a module holds."""

    files = {path.resolve() for path in Path(igoas.model.__file__).parent.glob("*.py")}
    for module in network.modules():
        functions = [value for value in vars(module).values() if callable(value) and _setting(value) is not None]
        for item in [type(module), *functions]:
            try:
                source = inspect.getsourcefile(item)
            except TypeError:  # built-in
                source = None
            if source is not None:
                files.add(Path(source).resolve())
    return sorted(files)


def network_key(network: torch.nn.Module, height: int, width: int) -> str:
    """SHA-256 of what decides the converted graph (see the module docstring)."""
    openvino = optional("openvino", "the OpenVINO back end")

    digest = hashlib.sha256(f"{height}x{width} torch {torch.__version__} openvino {openvino.__version__}".encode())
    for name, module in network.named_modules():
        kind = type(module)
        settings = {key: _setting(value) for key, value in sorted(vars(module).items())
                    if key != "training" and not key.startswith("_") and _setting(value) is not None}
        digest.update(f"{name}:{kind.__module__}.{kind.__qualname__}:{settings!r}".encode())
    for source in _graph_sources(network):
        digest.update(f"{source.name}:".encode() + source.read_bytes())
    for name, tensor in list(network.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _cached_conversion(xml: Path) -> Any | None:
    """The converted model from the cache, or None (not there, or unreadable: converted anew)."""
    openvino = optional("openvino", "the OpenVINO back end")

    if not xml.is_file():
        return None
    try:
        return openvino.Core().read_model(str(xml))
    except Exception:  # a damaged entry only costs the conversion
        return None


def _save_conversion(converted: Any, xml: Path) -> None:
    """Write the converted model (weights kept at fp32) beside the others; a cache that
    cannot be written is a warning, not an error."""
    openvino = optional("openvino", "the OpenVINO back end")

    try:
        xml.parent.mkdir(parents=True, exist_ok=True)
        staging = staging_place(xml.parent, ".staging-", folder=True)
        try:
            openvino.save_model(converted, str(staging / xml.name), compress_to_fp16=False)
            os.replace(staging / xml.with_suffix(".bin").name, xml.with_suffix(".bin"))
            os.replace(staging / xml.name, xml)  # last: a present .xml means a complete entry
        finally:
            for leftover in staging.iterdir():
                leftover.unlink()
            staging.rmdir()
    except (OSError, RuntimeError) as err:  # OpenVINO reports a failed write (disk full) as RuntimeError
        print(f"warning: cannot cache the OpenVINO model in {xml.parent} ({err}); it is converted again next time",
              file=sys.stderr)
