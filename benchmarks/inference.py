"""Images/s of `ReIDModel.embed` at 384x128 (ResNet-50 IGOAS): PyTorch fp32, the fastest PyTorch path, onnxruntime.

The fastest PyTorch path is what `precision="auto", channels_last="auto"` resolves to on
this machine (bf16 autocast + channels_last where the CPU has native bf16; plain fp32
elsewhere, never emulated bf16). The onnxruntime path runs the file `igoas export` writes.
A fourth path keeps fp32 numerics in the channels_last memory format. Every path embeds
the same uint8 images, preprocessing included; speeds are reported as ratios against fp32
measured in the same run, with the lowest cosine similarity of each path's embeddings to
fp32's. Goal: the fastest path whose cosine is >= 0.999 runs >= 2x fp32.

    python benchmarks/inference.py [--images 32] [--batch-size 16] [--repeats 3] [--checkpoint CKPT] [--device cuda]

On CUDA the onnxruntime path is left out (it would run on the CPU) and the fastest path is
bf16 autocast (fp16 where the GPU lacks bf16) with channels_last.

Prints one JSON line. Without --checkpoint the weights are random (no download) with
BatchNorm statistics calibrated on the inputs; speed does not depend on the weights, but
random weights make the embeddings more sensitive to rounding than trained ones, so their
bf16 cosine is a pessimistic bound.
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

from igoas.export import export_model, load_exported
from igoas.inference import ReIDModel
from igoas.model import build_model
from igoas.artifacts.preprocess import Preprocess

IMAGENET = Preprocess(384, 128, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


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


def images_per_second(
    embed: Callable[[torch.Tensor], np.ndarray], images: torch.Tensor, repeats: int
) -> tuple[float, np.ndarray]:
    """Best of `repeats` timed runs after one warm-up (the least disturbed by other processes)."""
    embeddings = embed(images)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        embed(images)
        best = min(best, time.perf_counter() - start)
    return len(images) / best, embeddings


def onnx_embedder(model: ReIDModel, folder: Path, batch_size: int, threads: int) -> Callable[[torch.Tensor], np.ndarray]:
    """The exported graph fed the same way `embed` feeds the network: preprocessing, then batches."""
    result = export_model(model, "onnx", folder / "igoas.onnx", check_batch_sizes=(2,))
    if not result.check.passed:
        raise SystemExit(f"ONNX export failed its check: {result.check}")
    run = load_exported(result.path, threads=threads)

    def embed(images: torch.Tensor) -> np.ndarray:
        chunks = [
            run(torch.stack([model.preprocess_config.resize(i) for i in images[s : s + batch_size]]).numpy())
            for s in range(0, len(images), batch_size)
        ]
        return np.concatenate(chunks)

    return embed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for every path (default: PyTorch's and onnxruntime's own defaults); "
                             "1 gives steadier numbers on a machine shared with other jobs")
    parser.add_argument("--checkpoint", help="benchmark this checkpoint (its own input size) instead of random weights")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = parser.parse_args()
    cuda = torch.device(args.device).type == "cuda"

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.checkpoint:
        loaded = ReIDModel.from_checkpoint(args.checkpoint, precision="fp32", channels_last=False)
        network, preprocess = loaded.network, loaded.preprocess_config
    else:
        network = build_model("igoas", num_classes=751, pretrained=False, backbone="resnet50")
        preprocess = IMAGENET
    images = torch.randint(0, 256, (args.images, 3, preprocess.height, preprocess.width), dtype=torch.uint8)
    if not args.checkpoint:
        calibrate_batchnorm(network, preprocess(images[: args.batch_size]))
    fp32 = ReIDModel(network, preprocess, precision="fp32", channels_last=False, device=args.device)
    # its own copy: channels_last converts a model's weights in place, which would change the fp32 path
    fastest = ReIDModel(copy.deepcopy(network), preprocess, precision="auto", channels_last="auto", device=args.device)
    # fp32 numerics with the channels_last memory format: the fast path for when bf16 is not accurate enough
    fp32_cl = ReIDModel(copy.deepcopy(network), preprocess, precision="fp32", channels_last=True, device=args.device)
    paths = {
        "pytorch_fp32": lambda x: fp32.embed(x, batch_size=args.batch_size),
        "pytorch_fp32_channels_last": lambda x: fp32_cl.embed(x, batch_size=args.batch_size),
        "pytorch_fastest": lambda x: fastest.embed(x, batch_size=args.batch_size),
    }
    with tempfile.TemporaryDirectory() as folder:
        threads = args.threads or torch.get_num_threads()
        if not cuda:
            paths["onnxruntime"] = onnx_embedder(fp32, Path(folder), args.batch_size, threads)
        speeds, cosines, reference = {}, {}, None
        for name, embed in paths.items():
            speeds[name], embeddings = images_per_second(embed, images, args.repeats)
            reference = embeddings if reference is None else reference
            cosines[name] = float(np.min(np.sum(embeddings * reference, axis=1)))
    ratios = {name: speed / speeds["pytorch_fp32"] for name, speed in speeds.items()}
    accurate = [name for name in speeds if name != "pytorch_fp32" and cosines[name] >= 0.999]
    best_accurate = max(accurate, key=ratios.get, default=None)
    print(json.dumps({
        "benchmark": "inference",
        "model": f"{fp32.spec.get('name')} {fp32.spec.get('backbone')}",
        "device": torch.cuda.get_device_name(args.device) if cuda else "cpu",
        "weights": args.checkpoint or "random, BatchNorm calibrated",
        "input": f"{preprocess.height}x{preprocess.width}",
        "images": args.images,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "fastest_path": f"precision={fastest.precision}, channels_last={fastest.channels_last}",
        "images_per_s": {k: round(v, 2) for k, v in speeds.items()},
        "ratio_vs_fp32": {k: round(v, 3) for k, v in ratios.items()},
        "min_cosine_vs_fp32": {k: round(v, 6) for k, v in cosines.items()},
        "fastest_with_cosine_0.999": best_accurate,
        "goal_met": best_accurate is not None and ratios[best_accurate] >= 2.0,
    }))


if __name__ == "__main__":
    main()
