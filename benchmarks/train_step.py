"""Speed of one IGOAS training step and one inference batch: fp32 vs bf16 autocast (and, on
CUDA, TF32), with and without channels_last, through the same `igoas.speed` options
training and inference use.

Prints one JSON line: images/s and GFLOP/s per path, ratios against plain fp32 measured in
the same run, each inference path's smallest embedding cosine to fp32's, and the CPU
capability. Examples: python benchmarks/train_step.py --backbone resnet18 --repeats 2;
python benchmarks/train_step.py --device cuda --batch 64 (the published presets' tf32
against fp32 and bf16).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from igoas.losses import LossConfig, compute_losses
from igoas.model import build_model
from igoas.speed import (autocast, cpu_has_native_bf16, inference_context, prepare_model_for_inference,
                         set_tf32, to_memory_format)

PATHS = {"fp32": ("fp32", False), "fp32_channels_last": ("fp32", True),
         "tf32": ("tf32", False), "tf32_channels_last": ("tf32", True),
         "bf16": ("bf16", False), "bf16_channels_last": ("bf16", True)}


def _interleaved_seconds(steps: dict[str, Callable[[], object]], repeats: int, device: str) -> dict[str, float]:
    """Median seconds per step; paths take turns so that load from other processes on a
    shared machine hits them all alike."""
    for step in steps.values():
        step()  # warm-up: oneDNN primitive creation, cuDNN algorithm choice, allocator
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            _synchronize(device)
            start = time.perf_counter()
            step()
            _synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(model, optimizer, images, labels, precision: str, channels_last: bool, device: str):
    images = to_memory_format(images, channels_last)
    generator = torch.Generator().manual_seed(0)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            output = model(images, 30.0, generator)
        loss = compute_losses(output, labels, LossConfig()).total
        set_tf32(device, precision)  # the backward pass runs in the step's precision too
        loss.backward()
        optimizer.step()
        return loss

    return step


def _inference(model, images, precision: str, channels_last: bool, device: str):
    images = to_memory_format(images, channels_last)

    def run() -> torch.Tensor:
        with inference_context(device, precision):
            return model(images).float()

    return run


def _flops(step: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=702)
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of " + ",".join(PATHS))
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = parser.parse_args()
    device = args.device
    on_cuda = torch.device(device).type == "cuda"
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.height, args.width, device=device)
    labels = torch.randint(0, args.num_classes, (args.batch,), device=device)
    reference = build_model("igoas", args.num_classes, backbone=args.backbone).to(device)
    paths = [p for p in args.paths.split(",") if p in PATHS]
    if "fp32" not in paths:
        paths.insert(0, "fp32")
    if not on_cuda:
        # tf32 is fp32 on a CPU; emulated bf16 is tens of times slower: measuring either would only waste the run.
        paths = [p for p in paths if PATHS[p][0] == "fp32" or (PATHS[p][0] == "bf16" and cpu_has_native_bf16())]

    result: dict[str, object] = {"benchmark": "train_step", "backbone": args.backbone, "batch": args.batch,
                                 "size": [args.height, args.width], "repeats": args.repeats,
                                 "device": torch.cuda.get_device_name(device) if on_cuda else "cpu",
                                 "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                                 "native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads()}
    train_steps, infer_runs = {}, {}
    for name in paths:
        precision, channels_last = PATHS[name]
        model = to_memory_format(copy.deepcopy(reference).train(), channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=5e-4)
        train_steps[name] = _train_step(model, optimizer, images, labels, precision, channels_last, device)
        model = prepare_model_for_inference(copy.deepcopy(reference), precision, channels_last, device)
        infer_runs[name] = _inference(model, images, precision, channels_last, device)
    flops_train, flops_infer = _flops(train_steps["fp32"]), _flops(infer_runs["fp32"])
    embeddings = {name: run() for name, run in infer_runs.items()}
    train = {name: {"images_per_s": args.batch / s, "gflops_per_s": flops_train / s / 1e9}
             for name, s in _interleaved_seconds(train_steps, args.repeats, device).items()}
    infer = {name: {"images_per_s": args.batch / s, "gflops_per_s": flops_infer / s / 1e9}
             for name, s in _interleaved_seconds(infer_runs, args.repeats, device).items()}

    for table in (train, infer):
        for entry in table.values():
            entry["ratio_vs_fp32"] = entry["images_per_s"] / table["fp32"]["images_per_s"]
    for name, entry in infer.items():
        entry["cosine_min_vs_fp32"] = float(F.cosine_similarity(embeddings[name], embeddings["fp32"], dim=1).min())
    fastest_train = max(train, key=lambda k: train[k]["images_per_s"])
    fastest_infer = max(infer, key=lambda k: infer[k]["images_per_s"])
    cosine = F.cosine_similarity(embeddings[fastest_infer], embeddings["fp32"], dim=1)
    result.update({
        "train": train, "inference": infer,
        "train_gflop_per_step": flops_train / 1e9, "inference_gflop_per_batch": flops_infer / 1e9,
        "fastest_train": fastest_train, "fastest_train_ratio": train[fastest_train]["ratio_vs_fp32"],
        "fastest_inference": fastest_infer, "fastest_inference_ratio": infer[fastest_infer]["ratio_vs_fp32"],
        "fastest_inference_cosine_min": float(cosine.min()),
        "goals": {"train_ratio": 2.25, "inference_ratio": 2.0, "cosine": 0.999},
    })
    print(json.dumps(result))


if __name__ == "__main__":
    main()
