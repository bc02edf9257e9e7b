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
    python benchmarks/inference.py --device cuda

On CUDA only the PyTorch paths run (OpenVINO and onnxruntime would run on the CPU); the
`auto` path there is bf16 autocast (fp16 where the GPU lacks bf16) with channels_last.

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
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from igoas.inference import ReIDModel
from igoas.model import build_model
from igoas.speed import cpu_has_native_bf16
from igoas.artifacts.preprocess import Preprocess

IMAGENET = Preprocess(384, 128)  # the published input: ImageNet mean and std
GOAL_RATIO, GOAL_COSINE = 2.0, 0.999
Embed = Callable[[torch.Tensor], np.ndarray]  # images (uint8, or float in [0, 1]) -> unit-length embeddings
Labels = tuple[np.ndarray, np.ndarray]  # identities, cameras


def calibrate_batchnorm(network: torch.nn.Module, batch: torch.Tensor) -> None:
    """Set BatchNorm statistics from data, as training would.

    With random weights and default statistics, activations grow through the stages until
    the OSM attention saturates and the suppression half of the embedding is ~1e-9 noise,
    on which no two numerical paths agree; calibrated statistics give trained-like scales.
    """
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
    network.train()
    with torch.no_grad():
        network(batch)
    network.eval()


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

    from igoas.export import export_model

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


def reid_paths(network: torch.nn.Module, preprocess: Preprocess, batch_size: int,
               device: str) -> tuple[dict[str, Embed], str]:
    """The ReIDModel paths (PyTorch, and OpenVINO on the CPU), each on its own copy of the network."""
    from igoas.backends import openvino_available

    settings = {
        "pytorch_fp32": dict(precision="fp32", channels_last=False),
        "pytorch_fp32_channels_last": dict(precision="fp32", channels_last=True),
        "pytorch_auto": dict(precision="auto", channels_last="auto"),
    }
    if openvino_available() and torch.device(device).type == "cpu":
        settings["openvino_fp32"] = dict(precision="fp32", backend="openvino")
        if cpu_has_native_bf16():
            settings["openvino_bf16"] = dict(precision="bf16", backend="openvino")
    # copies: channels_last converts a model's weights in place, which would change the other paths
    models = {name: ReIDModel(copy.deepcopy(network), preprocess, device=device, **options)
              for name, options in settings.items()}
    auto = models["pytorch_auto"]
    embedders = {name: (lambda x, m=model: m.embed(x, batch_size=batch_size)) for name, model in models.items()}
    return embedders, f"precision={auto.precision}, channels_last={auto.channels_last}"


def eval_images(dataset: str, root: str) -> tuple[dict[str, list[str]], dict[str, Labels]]:
    """Query and gallery images of a dataset (as files, resized later by each path) and their labels."""
    from igoas.extraction import dataset_images

    images, labels = {}, {}
    for split in ("query", "gallery"):
        listed = dataset_images(dataset, root, split)
        images[split] = listed.paths
        labels[split] = (np.asarray(listed.pids), np.asarray(listed.camids))
    return images, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images per timed run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for every path (default: PyTorch's default); 1 gives steadier numbers on a "
                             "machine shared with other jobs")
    parser.add_argument("--checkpoint", help="benchmark this checkpoint (its own input size) instead of random weights")
    parser.add_argument("--calibration-images", type=int, default=256,
                        help="real images that calibrate the int8 quantisation (synthetic pedestrians)")
    parser.add_argument("--eval-root", help="also report R1/mAP of every path on this dataset's query and gallery")
    parser.add_argument("--dataset", default="synthetic", help="the dataset at --eval-root (default synthetic)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = parser.parse_args()
    cuda = torch.device(args.device).type == "cuda"

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    if args.checkpoint:
        loaded = ReIDModel.from_checkpoint(args.checkpoint, precision="fp32", channels_last=False)
        network, preprocess = loaded.network, loaded.preprocess_config
    else:
        network = build_model("igoas", num_classes=751, pretrained=False, backbone="resnet50")
        preprocess = IMAGENET
    timed = torch.randint(0, 256, (args.images, 3, preprocess.height, preprocess.width), dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as folder:
        calibration = calibration_images(preprocess, args.calibration_images, Path(folder))
        if not args.checkpoint:
            calibrate_batchnorm(network, preprocess.normalize(calibration[:64]))
        paths, auto_path = reid_paths(network, preprocess, args.batch_size, args.device)
        reference = ReIDModel(copy.deepcopy(network), preprocess, precision="fp32", channels_last=False)
        if not cuda:
            paths.update(onnx_paths(reference, Path(folder), calibration, args.batch_size, threads))
        speeds = {name: images_per_second(embed, timed, args.repeats) for name, embed in paths.items()}
        # accuracy on real images: the dataset's when given, else held-out calibration images
        if args.eval_root:
            images, labels = eval_images(args.dataset, args.eval_root)
            cosine_images = images["query"] + images["gallery"]
        else:
            cosine_images = calibration[-args.images:]
        outputs = {name: embed(cosine_images) for name, embed in paths.items()}
        cosines = {name: float(np.min(np.sum(out * outputs["pytorch_fp32"], axis=1))) for name, out in outputs.items()}
    ratios = {name: speed / speeds["pytorch_fp32"] for name, speed in speeds.items()}
    accurate = [name for name in speeds if name != "pytorch_fp32" and cosines[name] >= GOAL_COSINE]
    best_accurate = max(accurate, key=ratios.get, default=None)
    report = {
        "benchmark": "inference",
        "model": f"{reference.spec.get('name')} {reference.spec.get('backbone')}",
        "device": torch.cuda.get_device_name(args.device) if cuda else "cpu",
        "weights": args.checkpoint or "random, BatchNorm calibrated",
        "input": f"{preprocess.height}x{preprocess.width}",
        "images": args.images,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "threads": threads,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(),
        "pytorch_auto": auto_path,
        "images_per_s": {k: round(v, 2) for k, v in speeds.items()},
        "ratio_vs_fp32": {k: round(v, 3) for k, v in ratios.items()},
        "min_cosine_vs_fp32": {k: round(v, 6) for k, v in cosines.items()},
        "cosine_on": f"{args.dataset} query + gallery at {args.eval_root}" if args.eval_root else
                     f"{len(cosine_images)} synthetic images",
        f"fastest_with_cosine_{GOAL_COSINE}": best_accurate,
        "goal_met": best_accurate is not None and ratios[best_accurate] >= GOAL_RATIO,
    }
    if args.eval_root:
        report["R1_mAP"] = {name: rank_metrics(out, len(images["query"]), labels) for name, out in outputs.items()}
    print(json.dumps(report))


def rank_metrics(embeddings: np.ndarray, num_query: int, labels: dict[str, Labels]) -> dict[str, float]:
    """R1 and mAP (percent) of query rows against gallery rows."""
    from igoas.evaluation import evaluate_features

    (q_pids, q_cams), (g_pids, g_cams) = labels["query"], labels["gallery"]
    result = evaluate_features(embeddings[:num_query], embeddings[num_query:], q_pids, g_pids, q_cams, g_cams)
    return {"R1": round(100 * result.rank(1), 2), "mAP": round(100 * result.mAP, 2)}


if __name__ == "__main__":
    main()
