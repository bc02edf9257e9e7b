"""Accuracy and speed of one checkpoint in every deployable format, against PyTorch fp32 in the same run.

Formats (rows): `pytorch_fp32` (the reference), `pytorch_auto` (what `precision="auto"`,
`channels_last="auto"` resolve to on this machine), `torchscript`, `onnx_fp32`
(onnxruntime), `openvino_fp32`, `openvino_bf16` (`ReIDModel(backend="openvino",
precision="bf16")`; on a CPU without native bf16 it is emulated and only measured with
`--include-emulated`) and `onnx_int8` (`igoas export --int8`, calibrated on the dataset's
train split). The PyTorch rows embed through `ReIDModel` (`embed`, `embed_crops`), the
exported files through `igoas.runtime.load(path)` (`embed_images`, `embed`); TorchScript,
which the torch-free runtime does not open, goes through the runtime's same crop path on
`igoas.deploy.export.load_exported`.

Per format, on the test set (query + gallery, decoded once, the same pixels for every row):
the min and mean cosine of its embeddings to PyTorch fp32's, R1 and mAP (percent) and their
change vs fp32 (points), crops/s at batch 1, 8 and 32 (resize included), and per-frame
latency p50/p99 of `embed(frame, boxes)` for 10 and 30 boxes. A format "keeps the
ranking" when |dmAP| <= 0.1 and |dR1| <= 0.1 points, and "reaches 2x" when its crops/s at
batch 32 is at least twice PyTorch fp32's.

    python benchmarks/formats.py --checkpoint best.pth [--data data/synthetic] [--threads N]
    python benchmarks/formats.py --smoke       # a tiny random ResNet-18 baseline at 64x32: seconds

Prints one JSON line (CPU capability, torch/onnxruntime/openvino versions, threads, every
row) on stdout and the markdown table on stderr; `--out DIR` also writes formats.json and
formats.md there.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from bench_common import attempt, json_safe, measure, output_file, Results
from inference import rank_metrics  # benchmarks/inference.py: R1/mAP in percent
from igoas.artifacts.checkpoint import checkpoint_payload, save_checkpoint
from igoas.compute.speed import cpu_has_native_bf16
from igoas.data import render_synthetic
from igoas.deploy.export import DEFAULT_INT8_MIN_COSINE, Quantization, export_model, exported_info, load_exported
from igoas.deploy.extraction import dataset_images
from igoas.deploy.inference import ReIDModel
from igoas.imaging.images import load_image
from igoas.imaging.preprocess import Preprocess
from igoas.model import build_model
import igoas.runtime
from igoas.utils.fileio import atomic_write
from igoas.runtime import backends as runtime_backends

FORMATS = ("pytorch_fp32", "pytorch_auto", "torchscript", "onnx_fp32", "openvino_fp32", "openvino_bf16", "onnx_int8")
BATCH_SIZES = (1, 8, 32)
CROPS_PER_FRAME = (10, 30)
RANKING_POINTS = 0.1  # |dR1| and |dmAP| at most this many points: the ranking is kept
GOAL_RATIO, GOAL_BATCH = 2.0, 32
FRAME_SIZE = (720, 1280)  # height, width of the latency frames


@dataclass
class Format:
    """One way of embedding: images (uint8 H x W x 3 RGB) -> rows, at a batch size; a frame and boxes -> rows."""

    api: str
    images: Callable[[Sequence[np.ndarray], int], np.ndarray]
    frame: Callable[[np.ndarray, np.ndarray], np.ndarray]
    precision: str = "fp32"


def pytorch_format(model: ReIDModel, api: str = "ReIDModel.embed / embed_crops") -> Format:
    return Format(api, lambda crops, batch: model.embed(list(crops), batch_size=batch),
                  lambda frame, boxes: model.embed_crops(frame, boxes),
                  f"{model.precision}{', channels_last' if model.channels_last else ''}"
                  f"{', ' + model.backend if model.backend != 'pytorch' else ''}")


def runtime_format(embedder: igoas.runtime.CropEmbedder, precision: str = "fp32") -> Format:
    return Format("igoas.runtime.load(...).embed_images / embed",
                  lambda crops, batch: embedder.embed_images(list(crops), max_batch=batch),
                  lambda frame, boxes: embedder.embed(frame, boxes), precision)


@contextlib.contextmanager
def torchscript_in_runtime() -> Iterator[None]:
    """igoas.runtime's loader table with TorchScript (.pt, which needs torch) added for the time of a load,
    so the TorchScript row runs the runtime's own crop cutting, resize and batching."""
    def load(path: str | Path, threads: int | None = None) -> runtime_backends.LoadedGraph:
        return runtime_backends.LoadedGraph(load_exported(path, threads), exported_info(path))

    runtime_backends.GRAPH_LOADERS[".pt"] = load
    try:
        yield
    finally:
        runtime_backends.GRAPH_LOADERS.pop(".pt", None)


def build_format(name: str, checkpoint: Path, folder: Path, calibration: Path, args: argparse.Namespace) -> Format:
    """The format `name` of `checkpoint`, exporting into `folder` where it needs a file."""
    def exported(format: str, suffix: str, **options: Any) -> Path:
        result = export_model(checkpoint, format, folder / f"{name}{suffix}", **options)
        if not result.check.passed:
            raise RuntimeError(f"{name}: the export failed its check (min cosine {result.check.min_cosine:.6f})")
        return result.path

    if name in ("pytorch_fp32", "pytorch_auto", "openvino_bf16"):
        options = {"pytorch_fp32": {"precision": "fp32", "channels_last": False},
                   "pytorch_auto": {"precision": "auto", "channels_last": "auto"},
                   "openvino_bf16": {"precision": "bf16", "backend": "openvino"}}[name]
        return pytorch_format(ReIDModel.from_checkpoint(checkpoint, device="cpu", **options))
    if name == "torchscript":
        with torchscript_in_runtime():
            return runtime_format(igoas.runtime.load(exported("torchscript", ".pt"), args.threads))
    if name == "onnx_fp32":
        return runtime_format(igoas.runtime.load(exported("onnx", ".onnx"), args.threads))
    if name == "openvino_fp32":
        return runtime_format(igoas.runtime.load(exported("openvino", ".xml"), args.threads))
    if name == "onnx_int8":
        quantization = Quantization(calibration, args.calibration_count, args.int8_min_cosine)
        return runtime_format(igoas.runtime.load(exported("onnx", ".onnx", quantization=quantization), args.threads),
                              "int8 (QDQ, per-channel weights, uint8 activations)")
    raise ValueError(f"unknown format {name!r}")


def crops_per_second(fmt: Format, crops: Sequence[np.ndarray], batch: int, repeats: int) -> float:
    """Crops/s embedding `crops` `batch` at a time (median of `repeats` after one warm-up), resize included."""
    timing = measure(lambda: (lambda: fmt.images(crops, batch)), repeats, "cpu", warmup=1)
    return len(crops) / timing["seconds"]


def frame_latency(fmt: Format, frames: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """p50/p99 milliseconds of one `embed(frame, boxes)` call, over `frames` after one warm-up call."""
    fmt.frame(*frames[0])
    times = []
    for frame, boxes in frames:
        start = time.perf_counter()
        fmt.frame(frame, boxes)
        times.append(1000 * (time.perf_counter() - start))
    return {"p50_ms": round(float(np.percentile(times, 50)), 3), "p99_ms": round(float(np.percentile(times, 99)), 3)}


def latency_frames(count: int, boxes: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` random 720p frames, each with `boxes` person-shaped boxes (60 to 300 px tall, width 0.3-0.5 x height)."""
    rng = np.random.default_rng(seed)
    height, width = FRAME_SIZE
    frames = []
    for _ in range(count):
        tall = rng.uniform(60, 300, boxes)
        wide = tall * rng.uniform(0.3, 0.5, boxes)
        x0, y0 = rng.uniform(0, width - wide), rng.uniform(0, height - tall)
        frames.append((rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
                       np.stack([x0, y0, x0 + wide, y0 + tall], axis=1)))
    return frames


def query_gallery(dataset: str, root: Path) -> tuple[list[np.ndarray], int, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Query then gallery images, decoded once by igoas's reader (H x W x 3 uint8 RGB), the query count, labels."""
    images, labels = [], {}
    for split in ("query", "gallery"):
        listed = dataset_images(dataset, root, split)
        images += [load_image(path).permute(1, 2, 0).contiguous().numpy() for path in listed.paths]
        labels[split] = (np.asarray(listed.pids), np.asarray(listed.camids))
    return images, len(labels["query"][0]), labels


def dataset_root(args: argparse.Namespace, folder: Path) -> Path:
    """--data as it is when it holds a dataset, else the synthetic set rendered there (or in `folder`)."""
    root = Path(args.data) if args.data else folder / "synthetic"
    if args.dataset == "synthetic" and not (root / "query").is_dir():
        render_synthetic(root, seed=0, size="tiny" if args.smoke else "small")
    return root


def smoke_checkpoint(folder: Path) -> Path:
    """A random ResNet-18 baseline at 64x32 (BatchNorm as initialised), saved as an igoas checkpoint."""
    torch.manual_seed(0)
    path = folder / "smoke.pth"
    save_checkpoint(path, checkpoint_payload(build_model("baseline", num_classes=4, backbone="resnet18"),
                                             Preprocess(64, 32)))
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="the igoas checkpoint to measure")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny random ResNet-18 baseline at 64x32, the tiny synthetic set, few repeats")
    parser.add_argument("--data", help="dataset root (default: the synthetic set rendered into a temporary folder; "
                                       "rendered here when the folder holds no dataset)")
    parser.add_argument("--dataset", default="synthetic", help="the dataset at --data (default synthetic)")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS, help="default: all")
    parser.add_argument("--include-emulated", action="store_true",
                        help="also measure OpenVINO bf16 on a CPU without native bf16 (emulated: slow)")
    parser.add_argument("--threads", type=int, default=0, help="threads for every format (default: PyTorch's)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per batch size (default 3; smoke 1)")
    parser.add_argument("--timing-crops", type=int, default=None,
                        help="crops per crops/s timing, at least the batch size (default 96; smoke 32)")
    parser.add_argument("--frames", type=int, default=None, help="frames per latency (default 50; smoke 4)")
    parser.add_argument("--calibration-count", type=int, default=256, help="int8 calibration crops (train split)")
    parser.add_argument("--int8-min-cosine", type=float, default=DEFAULT_INT8_MIN_COSINE,
                        help=f"cosine bound of the int8 export's own check on held-out train crops (default "
                             f"{DEFAULT_INT8_MIN_COSINE}); below it the row fails with the measured cosine")
    parser.add_argument("--out", help="folder (or .json file) for formats.json (and formats.md beside it)")
    args = parser.parse_args(argv)
    if not args.checkpoint and not args.smoke:
        parser.error("give --checkpoint CKPT, or --smoke for a tiny random model")
    args.repeats = args.repeats or (1 if args.smoke else 3)
    args.timing_crops = args.timing_crops or (32 if args.smoke else 96)
    args.frames = args.frames or (4 if args.smoke else 50)
    return args


def accuracy(rows: np.ndarray, reference: np.ndarray, num_query: int,
             labels: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Cosines to fp32's rows (both unit length) and R1/mAP in percent."""
    cosines = np.sum(rows.astype(np.float64) * reference, axis=1)
    return {"min_cosine": round(float(np.min(cosines)), 6), "mean_cosine": round(float(np.mean(cosines)), 6),
            **rank_metrics(rows, num_query, labels)}


def verdicts(report: dict[str, Any]) -> None:
    """dR1/dmAP, the ratio at batch 32 and the two verdicts of every measured row, against pytorch_fp32."""
    reference = report["rows"].get("pytorch_fp32", {})
    for row in report["rows"].values():
        if row.get("status") != "measured" or reference.get("status") != "measured":
            continue
        for metric in ("R1", "mAP"):
            if metric in row and metric in reference:
                row[f"d{metric}"] = round(row[metric] - reference[metric], 2)
        if "dR1" in row and "dmAP" in row:
            row["keeps_ranking"] = abs(row["dR1"]) <= RANKING_POINTS and abs(row["dmAP"]) <= RANKING_POINTS
        speed, base = row.get("crops_per_s", {}).get(str(GOAL_BATCH)), reference.get("crops_per_s", {}).get(str(GOAL_BATCH))
        if speed and base:
            row[f"ratio_at_{GOAL_BATCH}"] = round(speed / base, 3)
            row[f"reaches_{GOAL_RATIO:g}x_at_{GOAL_BATCH}"] = speed >= GOAL_RATIO * base


def markdown(report: dict[str, Any]) -> str:
    """The rows as a markdown table (one line per format, skipped ones with their reason)."""
    head = ["format", "precision", "min cos", "mean cos", "R1", "dR1", "mAP", "dmAP",
            *(f"crops/s b{b}" for b in BATCH_SIZES), *(f"{n} crops p50/p99 ms" for n in CROPS_PER_FRAME),
            "keeps ranking", f"{GOAL_RATIO:g}x at b{GOAL_BATCH}"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "yes" if value else "no"
        return f"{value:g}" if isinstance(value, float) else str(value)

    for name, row in report["rows"].items():
        if row.get("status") != "measured":
            lines.append(f"| {name} | {row.get('status')} |" + " |" * (len(head) - 2))
            continue
        latency = [f"{row['latency'][str(n)]['p50_ms']:.1f} / {row['latency'][str(n)]['p99_ms']:.1f}"
                   if str(n) in row.get("latency", {}) else "" for n in CROPS_PER_FRAME]
        values = [name, row.get("precision"), row.get("min_cosine"), row.get("mean_cosine"), row.get("R1"),
                  row.get("dR1"), row.get("mAP"), row.get("dmAP"),
                  *(row.get("crops_per_s", {}).get(str(b)) for b in BATCH_SIZES), *latency,
                  row.get("keeps_ranking"), row.get(f"reaches_{GOAL_RATIO:g}x_at_{GOAL_BATCH}")]
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines)


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def measure_format(fmt: Format, crops: list[np.ndarray], timing: list[np.ndarray],
                   frames: dict[int, list[tuple[np.ndarray, np.ndarray]]], args: argparse.Namespace,
                   ) -> tuple[dict[str, Any], np.ndarray]:
    """One row's speed, and its embeddings of the test set (accuracy is added against the reference)."""
    rows = fmt.images(crops, GOAL_BATCH)
    speeds = {str(batch): round(crops_per_second(fmt, timing[:max(batch, len(timing) // batch * batch)], batch,
                                                 args.repeats), 2) for batch in BATCH_SIZES}
    latency = {str(count): frame_latency(fmt, frames[count]) for count in CROPS_PER_FRAME}
    return {"status": "measured", "api": fmt.api, "precision": fmt.precision, "crops_per_s": speeds,
            "latency": latency}, rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    native_bf16 = cpu_has_native_bf16()
    report: dict[str, Any] = {
        "benchmark": "formats", "weights": args.checkpoint or "smoke: random ResNet-18 baseline at 64x32",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": native_bf16,
        "torch": torch.__version__, "onnxruntime": version("onnxruntime"), "openvino": version("openvino"),
        "threads": args.threads, "repeats": args.repeats, "batch_sizes": list(BATCH_SIZES),
        "crops_per_frame": list(CROPS_PER_FRAME), "frame": f"{FRAME_SIZE[1]}x{FRAME_SIZE[0]}",
        "ranking_kept_if": f"|dR1| <= {RANKING_POINTS} and |dmAP| <= {RANKING_POINTS} points",
        "rows": {}, "skipped": [], "finished": False,
    }
    results = Results(output_file(args.out, "formats.json"), report)
    with tempfile.TemporaryDirectory(prefix="igoas-formats-") as scratch:
        folder = Path(scratch)
        checkpoint = Path(args.checkpoint) if args.checkpoint else smoke_checkpoint(folder)
        root = dataset_root(args, folder)
        crops, num_query, labels = query_gallery(args.dataset, root)
        report["test_set"] = f"{args.dataset} at {root}: {num_query} query + {len(crops) - num_query} gallery images"
        calibration = root / "bounding_box_train" if (root / "bounding_box_train").is_dir() else root
        timing = [crops[i % len(crops)] for i in range(args.timing_crops)]
        frames = {count: latency_frames(args.frames, count, seed=count) for count in CROPS_PER_FRAME}
        reference: np.ndarray | None = None
        for name in args.formats:
            if name == "openvino_bf16" and not native_bf16 and not args.include_emulated:
                report["rows"][name] = {"status": "not native on this CPU (emulated bf16); --include-emulated "
                                                  "measures it"}
                continue
            started = time.perf_counter()
            fmt = attempt(f"{name} build", lambda name=name: build_format(name, checkpoint, folder, calibration, args),
                          report["skipped"], log)
            measured = attempt(name, lambda fmt=fmt: measure_format(fmt, crops, timing, frames, args),
                               report["skipped"], log) if fmt is not None else None
            if measured is None:
                report["rows"][name] = {"status": f"failed: {report['skipped'][-1]['reason']}"}
                continue
            row, rows = measured
            row["seconds"] = round(time.perf_counter() - started, 1)  # export or build, and measuring
            if name == "openvino_bf16" and not native_bf16:
                row["note"] = "not native on this CPU: emulated bf16"
            if name == "pytorch_fp32":
                reference = rows.astype(np.float64)
            if reference is not None:
                row.update(accuracy(rows, reference, num_query, labels))
            report["rows"][name] = row
            verdicts(report)
            log(f"{name:<14} crops/s {row['crops_per_s']}  min cosine {row.get('min_cosine')}")
            results.save()
    report.update(finished=True)
    results.save()
    table = markdown(report)
    if results.path is not None:
        atomic_write(results.path.with_suffix(".md"), lambda handle: handle.write((table + "\n").encode("utf-8")))
    print(json.dumps(json_safe(report)))
    print(table, file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
