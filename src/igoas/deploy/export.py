"""Export a trained model to ONNX, OpenVINO IR or TorchScript, and prove the export computes the same thing.

The exported graph is the whole embedding step except the resize: it takes RGB images
already resized to the checkpoint's input size, as float values in [0, 1] (B x 3 x H x W,
any B), applies the stored mean/std normalisation itself and returns unit-length
embeddings (B x D). The preprocessing entry and model spec travel inside the file (ONNX
metadata `igoas`, OpenVINO rt_info `igoas`, TorchScript extra file `igoas.json`) with the
flat fields a tracker needs (input size, mean/std, channel order, embedding size, method,
backbone, igoas version, the checkpoint's SHA-256), so a deployment, `igoas.runtime`
included, reads everything from the model file alone.

Every export is run on fresh inputs of two batch sizes (3 and 5 by default, neither of
which was used for tracing, which checks the dynamic batch dimension) and compared with
the PyTorch model in fp32. The export is written to a temporary file beside the target and
only renamed onto it once the check passed, so an export that fails the check (largest
cosine distance above the tolerance, or an error or Ctrl-C during the check) never appears
under the target name, and a previous export there is left as it was. The temporary file
of an export killed outright is removed by the next export to the same target.

`int8` (ONNX only) quantises the exported fp32 graph statically with onnxruntime (QDQ
format, per-channel int8 weights, uint8 activations, MinMax ranges) on crops read from a
folder of person images and resized by the checkpoint's own `Preprocess`, and records how
in the metadata (`quantization`). int8 cannot meet the fp32 tolerance, so its check runs
on held-out crops of that folder (the calibration crops where there are no others) against
a lower bound on the cosine similarity instead (`min_cosine`, default 0.98).

ONNX uses the `torch.export`-based exporter (`dynamo=True`) at opset 18: in this PyTorch
it is the maintained path, exports the network without warnings, and its lowest native
opset is 18. Opsets 18 to 23 (the highest torch.onnx declares) are accepted; for others
the exporter's version converter either fails on this network and quietly writes opset 18
anyway (17, or 29 and up) or the export fails (26 to 28), so they are refused up front.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from igoas.artifacts.provenance import checkpoint_identity
from igoas.data.base import list_images
from igoas.deploy.inference import ReIDModel
from igoas.imaging.images import IMAGE_EXTENSIONS
from igoas.imaging.preprocess import Preprocess
from igoas.runtime.backends import METADATA_KEY, load_onnx, load_openvino, openvino_metadata
from igoas.utils.errors import IgoasError, describe_os_error
from igoas.utils.extras import optional
from igoas.utils.fileio import atomic_write, staging_place, temporary_name_prefix
from igoas.utils.version import __version__

DEFAULT_OPSET = 18
MAX_OPSET = 23
DEFAULT_TOLERANCE = 1e-4
CHECK_BATCH_SIZES = (3, 5)
CHANNEL_ORDER = "RGB"
DEFAULT_CALIBRATION_COUNT = 256  # crops the int8 ranges are calibrated on
DEFAULT_INT8_MIN_COSINE = 0.98  # the lowest cosine to PyTorch fp32 an int8 export may give
INT8_CHECK_IMAGES = 64  # held-out crops the int8 export is checked on
CALIBRATION_BATCH = 8


class EmbeddingGraph(torch.nn.Module):
    """Normalisation + network + final L2 normalisation: the function an export computes."""

    def __init__(self, network: torch.nn.Module, preprocess: Preprocess) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocess.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.network((images - self.mean) / self.std), dim=1)


@dataclass(frozen=True)
class ExportFormat:
    """How one format is written and how a written file is run again for the check."""

    suffix: str
    write: Callable[..., None]  # (graph, example, staged path, info, opset, target=path) -> None
    load: Callable[[Path, int | None], Callable[[np.ndarray], np.ndarray]]
    companions: tuple[str, ...] = ()  # suffixes of files written beside the main one (OpenVINO's .bin)


@dataclass(frozen=True)
class Quantization:
    """Static int8 quantisation of an ONNX export: crops from `calibration` (a folder of
    person images, searched recursively) and the cosine bound its check must meet."""

    calibration: Path
    count: int = DEFAULT_CALIBRATION_COUNT
    min_cosine: float = DEFAULT_INT8_MIN_COSINE

    def metadata(self, calibrated_on: int) -> dict[str, Any]:
        """The `quantization` entry of the export's metadata."""
        return {"method": "onnxruntime.quantization.quantize_static", "format": "QDQ", "weights": "int8, per channel",
                "activations": "uint8", "calibrate_method": "MinMax", "calibration_images": calibrated_on,
                "calibration_folder": Path(self.calibration).name, "min_cosine_bound": self.min_cosine}


@dataclass(frozen=True)
class ExportCheck:
    """Outcome of running an export against the PyTorch model on the same inputs."""

    batch_sizes: tuple[int, ...]
    max_cosine_distance: float
    tolerance: float
    inputs: str = "random images"

    @property
    def passed(self) -> bool:
        return self.max_cosine_distance <= self.tolerance

    @property
    def min_cosine(self) -> float:
        return 1.0 - self.max_cosine_distance


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    check: ExportCheck


def _write_onnx(graph: EmbeddingGraph, example: torch.Tensor, path: Path, info: dict[str, Any], opset: int,
                target: Path) -> None:
    onnx = optional("onnx", "ONNX export")

    program = torch.onnx.export(
        graph,
        (example,),
        input_names=["images"],
        output_names=["embeddings"],
        opset_version=opset,
        dynamo=True,
        verbose=False,
        dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
    )
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(info)})
    atomic_write(path, lambda handle: handle.write(proto.SerializeToString()), shown_as=target)


def _load_onnx(path: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    return load_onnx(path, threads).run


def _write_openvino(graph: EmbeddingGraph, example: torch.Tensor, path: Path, info: dict[str, Any], opset: int,
                    target: Path) -> None:
    """The IR pair (`path` .xml + .bin) converted from the torch.export graph, batch dynamic, weights fp32."""
    openvino = optional("openvino", "OpenVINO export")

    with torch.no_grad():
        program = torch.export.export(graph, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    converted = openvino.convert_model(program)
    converted.set_rt_info(json.dumps(info), METADATA_KEY)
    try:
        openvino.save_model(converted, str(path), compress_to_fp16=False)
    except RuntimeError as err:  # OpenVINO reports a failed write as a RuntimeError
        raise IgoasError(f"cannot write {target}: {err}") from None


def _load_openvino(path: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    return load_openvino(path, threads).run


def _write_torchscript(
    graph: EmbeddingGraph, example: torch.Tensor, path: Path, info: dict[str, Any], opset: int, target: Path
) -> None:

    with torch.no_grad(), _quiet_torchscript():
        traced = torch.jit.trace(graph, example, check_trace=False)
        extra = {f"{METADATA_KEY}.json": json.dumps(info)}
        atomic_write(path, lambda handle: torch.jit.save(traced, handle, _extra_files=extra), shown_as=target)


def _load_torchscript(path: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    # TorchScript runs on PyTorch's own thread pool: torch.set_num_threads governs it
    with _quiet_torchscript():
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))).numpy()

    return run


EXPORT_FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat(".onnx", _write_onnx, _load_onnx),
    "openvino": ExportFormat(".xml", _write_openvino, _load_openvino, companions=(".bin",)),
    "torchscript": ExportFormat(".pt", _write_torchscript, _load_torchscript),
}


def export_model(
    model: ReIDModel | str | os.PathLike,
    format: str = "onnx",
    out: str | os.PathLike | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    check_batch_sizes: Sequence[int] = CHECK_BATCH_SIZES,
    tolerance: float = DEFAULT_TOLERANCE,
    quantization: Quantization | None = None,
) -> ExportResult:
    """Write `model` (a ReIDModel or a checkpoint path) in `format`, check it, and only then
    put it at `out`.

    `out` defaults to the checkpoint path with the format's suffix. `quantization` (ONNX
    only) writes the int8 model instead, checked against its cosine bound rather than
    `tolerance`. The result always carries the check; when it failed, nothing was written
    to `out` (a file already there is kept).
    """
    exporter = _format(format)
    _check_options(format, opset, check_batch_sizes, tolerance)
    calibration = _calibration_files(quantization, format) if quantization is not None else []
    checkpoint = None if isinstance(model, ReIDModel) else Path(model)
    path = Path(out) if out is not None else (checkpoint or Path("model")).with_suffix(exporter.suffix)
    if checkpoint is not None and path.resolve() == checkpoint.resolve():
        raise IgoasError(f"{path}: the export would overwrite the checkpoint itself; choose another file with --out")
    if checkpoint is not None:
        model = ReIDModel.from_checkpoint(checkpoint, precision="fp32", channels_last=False)
    graph = reference_graph(model)
    example = _example_images(model.preprocess_config, batch=2, seed=1)
    info = export_metadata(model, graph, example, checkpoint)
    staged = _staging_file(path, exporter.companions)
    written = [(staged.with_suffix(suffix), path.with_suffix(suffix)) for suffix in exporter.companions]
    try:
        if quantization is None:
            exporter.write(graph, example, staged, info, opset, target=path)
            check = check_export(staged, graph, model.preprocess_config, format, check_batch_sizes, tolerance)
        else:
            check = _export_int8(graph, example, staged, info, opset, path, quantization, calibration,
                                 model.preprocess_config, check_batch_sizes)
        if check.passed:
            for source, target in [*written, (staged, path)]:  # the main file last: it names a complete pair
                os.replace(source, target)
    finally:
        for leftover in [staged, *(source for source, _ in written)]:
            leftover.unlink(missing_ok=True)
    return ExportResult(path, format, check)


def export_metadata(model: ReIDModel, graph: EmbeddingGraph, example: torch.Tensor,
                    checkpoint: Path | None) -> dict[str, Any]:
    """What an exported file says about itself: the recipe and spec (`preprocess`, `model_spec`)
    and flat fields a tracker or `igoas.runtime` reads without knowing igoas's records."""
    preprocess = model.preprocess_config
    with torch.no_grad():
        embedding_size = int(graph(example).shape[1])
    spec = model.spec
    return {
        "preprocess": preprocess.to_dict(), "model_spec": spec,
        "input": "RGB float in [0, 1], B x 3 x H x W, resized to preprocess height x width",
        "output": "unit-length embeddings, B x D",
        "input_size": [preprocess.height, preprocess.width],
        "mean": list(preprocess.mean), "std": list(preprocess.std),
        "channel_order": CHANNEL_ORDER,
        "embedding_size": embedding_size,
        "method": spec.get("name"), "backbone": spec.get("backbone"),
        "igoas_version": __version__,
        "checkpoint_sha256": checkpoint_identity(checkpoint)["sha256"] if checkpoint is not None else None,
    }


def _check_options(format: str, opset: int, check_batch_sizes: Sequence[int], tolerance: float) -> None:
    """Refuse options the export or its check cannot honour, before any work."""
    if format == "onnx" and not DEFAULT_OPSET <= opset <= MAX_OPSET:
        raise IgoasError(f"opset {opset} (--opset): the ONNX exporter writes opsets {DEFAULT_OPSET} to {MAX_OPSET} "
                         f"of this network (others fail or come out as opset {DEFAULT_OPSET}); leave the default "
                         f"{DEFAULT_OPSET} or pick one in that range")
    if not check_batch_sizes or any(int(size) != size or size < 1 for size in check_batch_sizes):
        raise IgoasError(f"check batch sizes {list(check_batch_sizes)} (--check-batch-sizes): each must be a whole "
                         f"number of images, 1 or more; give e.g. {' '.join(map(str, CHECK_BATCH_SIZES))} (the default)")
    if not math.isfinite(tolerance) or tolerance < 0:
        raise IgoasError(f"tolerance {tolerance} (--tolerance): the largest accepted cosine distance must be a "
                         f"finite number, 0 or more; give e.g. {DEFAULT_TOLERANCE:g} (the default)")


def _calibration_files(quantization: Quantization, format: str) -> list[Path]:
    """The image files int8 is calibrated and checked on, refusing what cannot work before any work."""
    folder = Path(quantization.calibration)
    if format != "onnx":
        raise IgoasError(f"--int8 quantises ONNX exports only, not {format!r}; use --format onnx (OpenVINO's "
                         "own int8 needs NNCF, which igoas does not use)")
    if isinstance(quantization.count, bool) or int(quantization.count) != quantization.count or quantization.count < 1:
        raise IgoasError(f"calibration count {quantization.count!r} (--calibration-count): give a whole number of "
                         f"images, 1 or more (default {DEFAULT_CALIBRATION_COUNT})")
    if not (math.isfinite(quantization.min_cosine) and 0 < quantization.min_cosine <= 1):
        raise IgoasError(f"int8 cosine bound {quantization.min_cosine} (--int8-min-cosine): the lowest accepted "
                         f"cosine to PyTorch fp32 lies in (0, 1]; give e.g. {DEFAULT_INT8_MIN_COSINE} (the default)")
    if not folder.is_dir():
        raise IgoasError(f"{folder} (--calibration): not a folder; give a folder of person crops (e.g. a dataset's "
                         "bounding_box_train) to calibrate the int8 ranges on")
    files = list_images(folder, recursive=True)
    if not files:
        raise IgoasError(f"{folder} (--calibration): no image files ({', '.join(IMAGE_EXTENSIONS)}) in it or below "
                         "it; int8 needs person crops like the ones it will embed, a few hundred of them")
    return files


class _CropBatches:
    """onnxruntime's CalibrationDataReader over image files (that class accepts any object with
    `get_next`, so onnxruntime is not imported here): the checkpoint's own resize
    (`Preprocess.resize`, [0, 1] RGB; the graph normalises), a few images at a time."""

    def __init__(self, files: Sequence[Path], preprocess: Preprocess, batch: int = CALIBRATION_BATCH) -> None:
        self._chunks = iter([files[start:start + batch] for start in range(0, len(files), batch)])
        self._preprocess = preprocess

    def get_next(self) -> dict[str, np.ndarray] | None:
        chunk = next(self._chunks, None)
        return None if chunk is None else {"images": crop_batch(chunk, self._preprocess).numpy()}

    def __iter__(self) -> "_CropBatches":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def crop_batch(files: Sequence[str | os.PathLike], preprocess: Preprocess) -> torch.Tensor:
    """Image files as the exported graph's input: B x 3 x H x W RGB in [0, 1], resized as `ReIDModel` resizes."""
    return torch.stack([preprocess.resize(path) for path in files])


def _export_int8(graph: EmbeddingGraph, example: torch.Tensor, staged: Path, info: dict[str, Any], opset: int,
                 target: Path, quantization: Quantization, files: list[Path], preprocess: Preprocess,
                 batch_sizes: Sequence[int]) -> ExportCheck:
    """Export fp32 to a scratch folder, quantise it statically into `staged` with the metadata
    (plus `quantization`), and check it on held-out crops against the cosine bound."""
    onnx = optional("onnx", "int8 export")
    quantize = optional("onnxruntime.quantization", "int8 export")
    shape_inference = optional("onnxruntime.quantization.shape_inference", "int8 export")

    calibrate, held_out = files[:quantization.count], files[quantization.count:][:INT8_CHECK_IMAGES]
    info = {**info, "quantization": quantization.metadata(len(calibrate))}
    with tempfile.TemporaryDirectory(prefix="igoas-int8-") as scratch:
        fp32, prepared, quantised = (Path(scratch) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        _write_onnx(graph, example, fp32, info, opset, target=target)
        shape_inference.quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize.quantize_static(
            str(prepared), str(quantised), _CropBatches(calibrate, preprocess),
            quant_format=quantize.QuantFormat.QDQ, per_channel=True, activation_type=quantize.QuantType.QUInt8,
            weight_type=quantize.QuantType.QInt8, calibrate_method=quantize.CalibrationMethod.MinMax,
            extra_options={"CalibMaxIntermediateOutputs": 16})
        proto = onnx.load(str(quantised))
    del proto.metadata_props[:]  # the quantiser's copy of the fp32 entry, if any: written anew with `quantization`
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(info)})
    atomic_write(staged, lambda handle: handle.write(proto.SerializeToString()), shown_as=target)
    checked = held_out or calibrate
    inputs = (f"{len(checked)} {'held-out' if held_out else 'calibration'} crops of {quantization.calibration}")
    return check_export(staged, graph, preprocess, "onnx", batch_sizes, 1.0 - quantization.min_cosine,
                        images=crop_batch(checked, preprocess), inputs=inputs)


def _staging_file(path: Path, companions: Sequence[str] = ()) -> Path:
    """A new empty file beside `path` with its suffix (the format's loaders go by suffix),
    where the export is written and checked before it is renamed onto `path`; the staging
    files of killed exports of `path` are removed first (fileio.staging_place), companion
    files (.bin beside .xml) included."""

    prefix = temporary_name_prefix(path)
    try:
        for suffix in companions:  # staging_place removes a killed export's abandoned companions; its own new file goes
            staging_place(path.parent, prefix, suffix=suffix).unlink()
        return staging_place(path.parent, prefix, suffix=path.suffix)
    except OSError as err:
        raise IgoasError(f"cannot write {path}: {describe_os_error(err)}") from None


def reference_graph(model: ReIDModel) -> EmbeddingGraph:
    """An fp32, CPU, contiguous-memory copy of a ReIDModel's computation, for export and checks."""
    # a copy, so exporting never changes the device or memory format of the caller's model
    network = copy.deepcopy(model.network).to("cpu").to(memory_format=torch.contiguous_format).float().eval()
    return EmbeddingGraph(network, model.preprocess_config).eval()


def check_export(
    path: str | os.PathLike,
    graph: EmbeddingGraph,
    preprocess: Preprocess,
    format: str,
    batch_sizes: Sequence[int] = CHECK_BATCH_SIZES,
    tolerance: float = DEFAULT_TOLERANCE,
    images: torch.Tensor | None = None,
    inputs: str = "random images",
) -> ExportCheck:
    """Run the exported file and the PyTorch graph on the same images; report the worst cosine distance.

    The images are fresh random ones, one batch per size, or every row of `images` (RGB in
    [0, 1] at the input size) in consecutive batches cycling through the sizes.
    """
    run = _format(format).load(Path(path), None)
    worst = 0.0
    for batch in _check_batches(preprocess, batch_sizes, images):
        with torch.no_grad():
            expected = graph(batch).numpy()
        distances = cosine_distance(run(batch.numpy()), expected)
        if not np.isfinite(distances).all():  # max() would skip NaN and report a pass
            raise IgoasError(f"{path}: the embeddings contain NaN or Inf, so the export cannot be checked; the "
                             "model's weights are not finite (a diverged checkpoint?)")
        worst = max(worst, float(np.max(distances)))
    return ExportCheck(tuple(int(b) for b in batch_sizes), worst, tolerance, inputs)


def _check_batches(preprocess: Preprocess, batch_sizes: Sequence[int],
                   images: torch.Tensor | None) -> Iterator[torch.Tensor]:
    if images is None:
        for index, batch in enumerate(batch_sizes):
            yield _example_images(preprocess, batch, seed=100 + index)
        return
    start, index = 0, 0
    while start < len(images):
        size = int(batch_sizes[index % len(batch_sizes)])
        yield images[start:start + size]
        start, index = start + size, index + 1


def load_exported(path: str | os.PathLike, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A function images -> embeddings backed by an exported file (format from its suffix).

    `threads` caps onnxruntime's intra-op threads (None: its default, one per core).
    """
    path = Path(path)
    formats = {spec.suffix: name for name, spec in EXPORT_FORMATS.items()}
    if path.suffix not in formats:
        raise IgoasError(f"{path}: unknown export suffix {path.suffix!r}; expected one of {sorted(formats)}")
    if not path.is_file():
        raise IgoasError(f"{path}: no such exported model; write one with `igoas export CKPT`")
    return EXPORT_FORMATS[formats[path.suffix]].load(path, threads)


def exported_info(path: str | os.PathLike) -> dict[str, Any]:
    """The preprocessing, model spec and the other metadata fields stored inside an exported file."""
    path = Path(path)
    if path.suffix == ".xml":
        return openvino_metadata(path)
    if path.suffix == ".onnx":
        onnx = optional("onnx", "ONNX export")

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props.get(METADATA_KEY, "{}"))
    extra = {f"{METADATA_KEY}.json": ""}
    with _quiet_torchscript():
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[f"{METADATA_KEY}.json"] or "{}")


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise 1 - cos(a_i, b_i), computed in float64 so the check itself adds no error."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise IgoasError(f"exported model returned shape {a.shape}, PyTorch {b.shape}; the export is broken")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return 1.0 - np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)


@contextlib.contextmanager
def _quiet_torchscript() -> Iterator[None]:
    """The user asked for TorchScript explicitly; PyTorch's deprecation notice on every call adds nothing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated", category=FutureWarning)
        yield


def _format(name: str) -> ExportFormat:
    if name not in EXPORT_FORMATS:
        raise IgoasError(f"unknown export format {name!r}; choose one of {sorted(EXPORT_FORMATS)}")
    return EXPORT_FORMATS[name]


def _example_images(preprocess: Preprocess, batch: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, preprocess.height, preprocess.width, generator=generator)
