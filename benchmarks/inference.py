"""Images/s of embedding at 384x128 (ResNet-50 IGOAS) on every inference path, against PyTorch fp32.

Paths (each measured in the same run as the PyTorch fp32 reference, on the same uint8
images, preprocessing included):

- `pytorch_fp32` (the reference), `pytorch_fp32_channels_last`, `pytorch_auto` (what
  `precision="auto"` resolves to: bf16 autocast + channels_last on CPUs with native bf16);
- `openvino_fp32`, `openvino_bf16` (native-bf16 CPUs only): `ReIDModel(backend="openvino")`;
- `onnxruntime_fp32`: the file `igoas export` writes, all graph optimisations on;
- `onnxruntime_int8`: that file quantised statically by onnxruntime (QDQ, per-channel
  int8 weights, uint8 activations), calibrated on `--calibration-images` real images.

Reported per path: images/s, ratio to fp32, the lowest cosine similarity of its
embeddings to fp32's, and with `--eval-root` the R1/mAP change on a dataset. Goal: the
fastest path whose cosine is >= 0.999 runs >= 2x fp32.

    python benchmarks/inference.py [--images 32] [--batch-size 16] [--repeats 3] [--threads N]
    python benchmarks/inference.py --checkpoint CKPT --eval-root DIR [--dataset synthetic]
    python benchmarks/inference.py --device cuda --out DIR

On CUDA only the PyTorch paths run (OpenVINO and onnxruntime would run on the CPU); the
`auto` path there is bf16 autocast (fp16 where the GPU lacks bf16) with channels_last.
There the rows time the network alone on normalised batches already on the GPU (512
images in batches of 128, cuDNN autotuning on): preprocessing in this process would
dominate otherwise; `pytorch_fp32_end_to_end` and `pytorch_auto_end_to_end` time `embed`
with it. Each path is reported and skipped if it fails; with --out the JSON document is
rewritten after every path, and no timing starts that would not end within --budget-s of
process start.

Prints one JSON line with the CPU capability. Without --checkpoint the weights are random
(no download) with BatchNorm statistics calibrated on images, which makes embeddings far
more sensitive to rounding than trained ones: its cosines are a pessimistic bound. With
--checkpoint, cosines are measured on real images (the calibration set, or --eval-root's
query and gallery images).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench_common import (Budget, Results, attempt, calibrate_batchnorm, embedding_step, is_cuda, json_safe, measure,
                          output_file, prepare_device, set_tf32_switches)
from igoas.deploy.inference import ReIDModel
from igoas.model import build_model
from igoas.compute.speed import cpu_has_native_bf16, to_memory_format
from igoas.imaging.preprocess import Preprocess

IMAGENET = Preprocess(384, 128)  # the published input: ImageNet mean and std
GOAL_RATIO, GOAL_COSINE = 2.0, 0.999
Embed = Callable[[torch.Tensor], np.ndarray]  # images (uint8, or float in [0, 1]) -> unit-length embeddings
Labels = tuple[np.ndarray, np.ndarray]  # identities, cameras


def images_per_second(embed: Embed, images: torch.Tensor, repeats: int) -> float:
    """Best of `repeats` timed runs after one warm-up (the least disturbed by other processes)."""
    embed(images)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        embed(images)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def calibration_images(preprocess: Preprocess, count: int, folder: Path) -> torch.Tensor:
    """`count` real images at the input size (synthetic pedestrians rendered into `folder`), in [0, 1]."""
    from igoas.data import render_synthetic
    from igoas.data.base import list_images

    root = render_synthetic(folder / "synthetic", num_ids=max(12, count // 6), size="tiny")
    files = list_images(root, recursive=True)[:count]
    return torch.stack([preprocess.resize(path) for path in files])


def onnx_paths(model: ReIDModel, folder: Path, calibration: torch.Tensor, batch_size: int,
               threads: int) -> dict[str, Embed]:
    """onnxruntime on the exported file, fp32 and statically quantised to int8."""
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from igoas.deploy.export import export_model

    result = export_model(model, "onnx", folder / "igoas.onnx", check_batch_sizes=(2,))
    if not result.check.passed:
        raise SystemExit(f"ONNX export failed its check: {result.check}")
    prepared, quantised = folder / "prepared.onnx", folder / "igoas_int8.onnx"
    quant_pre_process(str(result.path), str(prepared), skip_symbolic_shape=True)
    batches = [{"images": calibration[s : s + batch_size].numpy()}
               for s in range(0, len(calibration) - batch_size + 1, batch_size)]  # equal sizes for the calibrator

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.remaining = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.remaining, None)

    quantize_static(str(prepared), str(quantised), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads

    def embedder(path: Path) -> Embed:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def embed(images: torch.Tensor) -> np.ndarray:
            chunks = [session.run(None, {"images": torch.stack(
                [model.preprocess_config.resize(i) for i in images[s : s + batch_size]]).numpy()})[0]
                for s in range(0, len(images), batch_size)]
            return np.concatenate(chunks)

        return embed

    return {"onnxruntime_fp32": embedder(result.path), "onnxruntime_int8": embedder(quantised)}


def reid_models(network: torch.nn.Module, preprocess: Preprocess, device: str,
                pytorch_only: bool = False) -> dict[str, ReIDModel]:
    """The ReIDModel paths (PyTorch, and OpenVINO on the CPU), each on its own copy of the network."""
    from igoas.deploy.backends import openvino_available

    settings = {
        "pytorch_auto": dict(precision="auto", channels_last="auto"),  # first: the most informative
        "pytorch_fp32": dict(precision="fp32", channels_last=False),
        "pytorch_fp32_channels_last": dict(precision="fp32", channels_last=True),
    }
    if not pytorch_only and openvino_available() and not is_cuda(device):
        settings["openvino_fp32"] = dict(precision="fp32", backend="openvino")
        if cpu_has_native_bf16():
            settings["openvino_bf16"] = dict(precision="bf16", backend="openvino")
    # copies: channels_last converts a model's weights in place, which would change the other paths
    return {name: ReIDModel(copy.deepcopy(network), preprocess, device=device, **options)
            for name, options in settings.items()}


def embedder(model: ReIDModel, batch_size: int) -> Embed:
    """`model.embed` with the TF32 switches set for its precision (not left from another path)."""
    def embed(images: Any) -> np.ndarray:
        set_tf32_switches(model.device, model.precision)
        return model.embed(images, batch_size=batch_size)

    return embed


def on_device(model: ReIDModel, images: torch.Tensor, batch_size: int) -> Callable[[], Callable[[], torch.Tensor]]:
    """A `measure` factory: the network alone on batches already normalised and on the device,
    which is what a GPU's speed is (a real extraction decodes and normalises in loader workers)."""
    def make() -> Callable[[], torch.Tensor]:
        ready = model.preprocess_config.normalize(images.float() / 255).to(model.device)
        batches = [to_memory_format(ready[start : start + batch_size], model.channels_last)
                   for start in range(0, len(ready), batch_size)]
        return embedding_step(model.network, batches, str(model.device), model.precision)

    return make


def eval_images(dataset: str, root: str) -> tuple[dict[str, list[str]], dict[str, Labels]]:
    """Query and gallery images of a dataset (as files, resized later by each path) and their labels."""
    from igoas.deploy.extraction import dataset_images

    images, labels = {}, {}
    for split in ("query", "gallery"):
        listed = dataset_images(dataset, root, split)
        images[split] = listed.paths
        labels[split] = (np.asarray(listed.pids), np.asarray(listed.camids))
    return images, labels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="images per timed run (default: 32 CPU, 512 CUDA)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 16 CPU, 128 CUDA")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for every path (default: PyTorch's default); 1 gives steadier numbers on a "
                             "machine shared with other jobs")
    parser.add_argument("--checkpoint", help="benchmark this checkpoint (its own input size) instead of random weights")
    parser.add_argument("--backbone", default="resnet50", help="backbone of the random-weight network")
    parser.add_argument("--height", type=int, default=384, help="input height of the random-weight network")
    parser.add_argument("--width", type=int, default=128, help="input width of the random-weight network")
    parser.add_argument("--calibration-images", type=int, default=None,
                        help="real images (synthetic pedestrians) that calibrate BatchNorm, the int8 quantisation "
                             "and give the cosines (default: 256 CPU, 128 CUDA)")
    parser.add_argument("--eval-root", help="also report R1/mAP of every path on this dataset's query and gallery")
    parser.add_argument("--dataset", default="synthetic", help="the dataset at --eval-root (default synthetic)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--pytorch-only", action="store_true", help="leave out OpenVINO and onnxruntime")
    parser.add_argument("--budget-s", type=float, default=900.0,
                        help="seconds from process start within which every started timing must end (default 900)")
    parser.add_argument("--out", help="folder (or .json file) to rewrite the JSON document in after every path")
    args = parser.parse_args(argv)
    cuda = is_cuda(args.device)
    args.images = args.images or (512 if cuda else 32)
    args.batch_size = args.batch_size or (128 if cuda else 16)
    args.calibration_images = args.calibration_images or (128 if cuda else 256)
    return args


def timed_rows(models: dict[str, ReIDModel], embedders: dict[str, Embed], images: torch.Tensor,
               args: argparse.Namespace) -> dict[str, Callable[[], dict[str, Any]]]:
    """What to time, by row name. On CUDA the network on device batches (each model's name)
    and, as separate `_end_to_end` rows, `embed` with the preprocessing in this process; on
    the CPU, where preprocessing is a real share of the cost, every path end to end."""
    def end_to_end(embed: Embed) -> Callable[[], dict[str, Any]]:
        return lambda: {"images_per_s": images_per_second(embed, images, args.repeats)}

    def device_only(model: ReIDModel) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            timing = measure(on_device(model, images, args.batch_size), args.repeats, args.device, warmup=1)
            return {"images_per_s": len(images) / timing["seconds"], "memory_before_mb": timing["memory_before_mb"],
                    "peak_memory_mb": timing["peak_memory_mb"]}
        return run

    if not is_cuda(args.device):
        return {name: end_to_end(embed) for name, embed in embedders.items()}
    rows = {name: device_only(model) for name, model in models.items()}
    rows.update({f"{name}_end_to_end": end_to_end(embedders[name]) for name in ("pytorch_auto", "pytorch_fp32")})
    return rows


def summarise(report: dict[str, Any]) -> None:
    """Ratios to PyTorch fp32 (null without it) and the fastest path close enough to fp32, from the rows so far."""
    speeds, cosines = report["images_per_s"], report["min_cosine_vs_fp32"]
    reference = speeds.get("pytorch_fp32")
    report["ratio_vs_fp32"] = {name: round(speed / reference, 3) if reference else None
                               for name, speed in speeds.items()}
    accurate = [name for name in speeds if name != "pytorch_fp32" and reference
                and (cosines.get(name.removesuffix("_end_to_end")) or 0.0) >= GOAL_COSINE]
    best = max(accurate, key=report["ratio_vs_fp32"].get, default=None)
    report[f"fastest_with_cosine_{GOAL_COSINE}"] = best
    report["goal_met"] = best is not None and report["ratio_vs_fp32"][best] >= GOAL_RATIO


def main(argv: list[str] | None = None, clock: Callable[[], float] | None = None) -> dict[str, Any]:
    """Run the benchmark; `clock` (seconds elapsed) replaces the process-start clock of the budget."""
    args = parse_args(argv)
    cuda = is_cuda(args.device)
    budget = Budget(args.budget_s, clock)
    prepare_device(args.device)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    if args.checkpoint:
        loaded = ReIDModel.from_checkpoint(args.checkpoint, precision="fp32", channels_last=False)
        network, preprocess = loaded.network, loaded.preprocess_config
    else:
        network = build_model("igoas", num_classes=751, pretrained=False, backbone=args.backbone)
        preprocess = Preprocess(args.height, args.width) if (args.height, args.width) != (384, 128) else IMAGENET
    report: dict[str, Any] = {
        "benchmark": "inference",
        "model": " ".join(str(getattr(network, "spec", {}).get(key)) for key in ("name", "backbone")),
        "device": torch.cuda.get_device_name(args.device) if cuda else "cpu",
        "torch": torch.__version__,
        "weights": args.checkpoint or "random, BatchNorm calibrated",
        "input": f"{preprocess.height}x{preprocess.width}",
        "images": args.images, "batch_size": args.batch_size, "repeats": args.repeats, "threads": threads,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_has_native_bf16(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "timing": ("network on normalised batches already on the GPU; *_end_to_end rows include preprocessing "
                   "in this process" if cuda else "end to end, preprocessing included"),
        "images_per_s": {}, "memory_mb": {}, "min_cosine_vs_fp32": {}, "skipped": [], "finished": False,
    }
    results = Results(output_file(args.out, "inference.json"), report)
    summarise(report)
    results.save()
    timed = torch.randint(0, 256, (args.images, 3, preprocess.height, preprocess.width), dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as folder:
        calibration = calibration_images(preprocess, args.calibration_images, Path(folder))
        if not args.checkpoint:
            calibrate_batchnorm(network, preprocess.normalize(calibration[:64]))
        models = reid_models(network, preprocess, args.device, args.pytorch_only)
        auto = models["pytorch_auto"]
        report["pytorch_auto"] = f"precision={auto.precision}, channels_last={auto.channels_last}"
        embedders = {name: embedder(model, args.batch_size) for name, model in models.items()}
        if not cuda and not args.pytorch_only:
            reference = ReIDModel(copy.deepcopy(network), preprocess, precision="fp32", channels_last=False)
            embedders.update(attempt("onnxruntime", lambda: onnx_paths(reference, Path(folder), calibration,
                                                                       args.batch_size, threads),
                                     report["skipped"], log) or {})
        expected = 0.0
        for name, run in timed_rows(models, embedders, timed, args).items():
            if report["images_per_s"] and not budget.fits(expected):
                report["skipped"].append({"path": name, "reason": "budget"})
                continue
            started = budget.elapsed()
            row = attempt(name, run, report["skipped"], log)
            if row is not None:
                expected = max(expected, budget.elapsed() - started)
                report["images_per_s"][name] = round(row["images_per_s"], 2)
                report["memory_mb"][name] = {key: row.get(key) for key in ("memory_before_mb", "peak_memory_mb")}
                log(f"{name:<34} {row['images_per_s']:9.1f} img/s")
                summarise(report)
            results.save()
        # accuracy on real images: the dataset's when given, else held-out calibration images
        if args.eval_root:
            images, labels = eval_images(args.dataset, args.eval_root)
            cosine_images = images["query"] + images["gallery"]
        else:
            cosine_images = calibration[-min(args.images, 64):]
        outputs = {name: attempt(f"{name} embeddings", lambda embed=embed: embed(cosine_images), report["skipped"], log)
                   for name, embed in embedders.items()}
    outputs = {name: out for name, out in outputs.items() if out is not None}
    if "pytorch_fp32" in outputs:
        report["min_cosine_vs_fp32"] = {name: round(float(np.min(np.sum(out * outputs["pytorch_fp32"], axis=1))), 6)
                                        for name, out in outputs.items()}
    report["cosine_on"] = (f"{args.dataset} query + gallery at {args.eval_root}" if args.eval_root else
                           f"{len(cosine_images)} synthetic images")
    if args.eval_root:
        report["R1_mAP"] = {name: rank_metrics(out, len(images["query"]), labels) for name, out in outputs.items()}
    summarise(report)
    report.update(finished=True, elapsed_s=round(budget.elapsed(), 1))
    results.save()
    print(json.dumps(json_safe(report)))
    return report


def rank_metrics(embeddings: np.ndarray, num_query: int, labels: dict[str, Labels]) -> dict[str, float]:
    """R1 and mAP (percent) of query rows against gallery rows."""
    from igoas.evaluation import evaluate_features

    (q_pids, q_cams), (g_pids, g_cams) = labels["query"], labels["gallery"]
    result = evaluate_features(embeddings[:num_query], embeddings[num_query:], q_pids, g_pids, q_cams, g_cams)
    return {"R1": round(100 * result.rank(1), 2), "mAP": round(100 * result.mAP, 2)}


if __name__ == "__main__":
    main()
