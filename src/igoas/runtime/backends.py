"""Running an exported embedding graph without PyTorch: onnxruntime for .onnx, OpenVINO for .xml.

Each loader returns the graph as a function (B x 3 x H x W float32 RGB in [0, 1] ->
B x D unit-length embeddings) with the `igoas` metadata stored in the file. `igoas export`
checks its files through the same loaders, so what the check runs is what a tracker runs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from igoas.utils.errors import IgoasError
from igoas.utils.extras import optional

METADATA_KEY = "igoas"  # ONNX metadata property, OpenVINO rt_info entry


@dataclass(frozen=True)
class LoadedGraph:
    """An exported graph ready to run, and the metadata written into it at export."""

    run: Callable[[np.ndarray], np.ndarray]
    metadata: dict[str, Any]


def load_onnx(path: str | Path, threads: int | None = None) -> LoadedGraph:
    """An ONNX file on onnxruntime's CPU provider (`threads` caps intra-op threads; None: one per core)."""
    onnxruntime = optional("onnxruntime", "running an ONNX file")

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return LoadedGraph(lambda images: session.run(None, {name: np.ascontiguousarray(images, dtype=np.float32)})[0],
                       _parse(text, path))


def load_openvino(path: str | Path, threads: int | None = None) -> LoadedGraph:
    """An OpenVINO IR (.xml with its .bin) compiled for the CPU at fp32, so it reproduces the
    PyTorch fp32 embeddings (OpenVINO would otherwise pick bf16 on CPUs that have it)."""
    core, model = _read_openvino(path)
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(model, "CPU", config)
    return LoadedGraph(lambda images: compiled(np.ascontiguousarray(images, dtype=np.float32))[0],
                       _openvino_rt_metadata(model, path))


def openvino_metadata(path: str | Path) -> dict[str, Any]:
    """The `igoas` metadata of an OpenVINO IR, read without compiling the model."""
    return _openvino_rt_metadata(_read_openvino(path)[1], path)


def _read_openvino(path: str | Path) -> tuple[Any, Any]:
    openvino = optional("openvino", "running an OpenVINO model")

    core = openvino.Core()
    return core, core.read_model(str(path))


def _openvino_rt_metadata(model: Any, path: str | Path) -> dict[str, Any]:
    return _parse(model.get_rt_info(METADATA_KEY).astype(str) if model.has_rt_info(METADATA_KEY) else None, path)


GRAPH_LOADERS: dict[str, Callable[[str | Path, int | None], LoadedGraph]] = {
    ".onnx": load_onnx,
    ".xml": load_openvino,
}


def load_graph(path: str | Path, threads: int | None = None) -> LoadedGraph:
    """The loader of `path`'s suffix, after checking the file is there."""
    path = Path(path)
    if path.suffix not in GRAPH_LOADERS:
        raise IgoasError(f"{path}: the runtime runs {' and '.join(sorted(GRAPH_LOADERS))} files, not "
                         f"{path.suffix or 'files without a suffix'}; export one with `igoas export CKPT`")
    if not path.is_file():
        raise IgoasError(f"{path}: no such exported model; write one with `igoas export CKPT --out {path}`")
    return GRAPH_LOADERS[path.suffix](path, threads)


def _parse(text: str | None, path: str | Path) -> dict[str, Any]:
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError as err:
        raise IgoasError(f"{path}: its '{METADATA_KEY}' metadata is not JSON ({err}); re-export the model with "
                         "`igoas export`") from None
