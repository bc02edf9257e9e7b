"""Speed of the published recipe's training step (and inference batch) on one device, for
every precision path: fp32, TF32 (CUDA), bf16 autocast and fp16 autocast with gradient
scaling (CUDA), each with and without channels_last and torch.compile.

For each training path it prints images/s, the peak memory (CUDA) and the projected time
of the 90-epoch Occluded-Duke recipe (15,618 training images per epoch, the training steps
only: no data loading, no evaluation), with ratios against fp32 measured in the same run;
for inference, images/s and the smallest embedding cosine to fp32's. A table goes to
stderr, one JSON line to stdout.

    python benchmarks/train_step.py --device cuda                 # ResNet-50, 384x128, batch 64: the GPU check
    python benchmarks/train_step.py --backbone resnet18 --batch 8 # the CPU paths

Meant to fit the few minutes a lent GPU gives: the uncompiled paths run first, then the
compiled ones in order of promise until --budget-s is spent; what did not fit is listed
as skipped, never silently dropped.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from igoas.losses import LossConfig, compute_losses
from igoas.model import build_model
from igoas.speed import (DTYPES, compile_network, cpu_has_native_bf16, has_native_bf16, inference_context,
                         prepare_model_for_inference, set_tf32, to_memory_format)

RECIPE_EPOCHS, RECIPE_EPOCH_IMAGES = 90, 15_618  # Occluded-Duke, the published recipe
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
# Compiled paths in order of promise: reduced precision and channels_last first.
COMPILE_ORDER = ("bf16", "fp16", "tf32", "fp32")


@dataclass(frozen=True)
class StepPath:
    """One way to run the training step."""

    precision: str
    channels_last: bool
    compiled: bool

    @property
    def name(self) -> str:
        return self.precision + ("+channels_last" if self.channels_last else "") + ("+compile" if self.compiled else "")


def available_precisions(device: str, requested: list[str]) -> list[str]:
    """The requested precisions this device runs natively (fp32 always; tf32 and fp16 on
    CUDA; bf16 where `has_native_bf16`: CUDA 8.0+ or a CPU with native bf16); fp32 first."""
    cuda = torch.device(device).type == "cuda"
    usable = {"fp32": True, "tf32": cuda, "fp16": cuda, "bf16": has_native_bf16(device)}
    return ["fp32"] + [p for p in requested if p != "fp32" and usable[p]]


def plan_paths(precisions: list[str], compile_modes: list[bool]) -> list[StepPath]:
    """Every uncompiled path, then the compiled ones in COMPILE_ORDER (channels_last first)."""
    paths = [StepPath(p, cl, False) for p in precisions for cl in (False, True)] if False in compile_modes else []
    if True in compile_modes:
        ordered = [p for p in COMPILE_ORDER if p in precisions]
        paths += [StepPath(p, cl, True) for cl in (True, False) for p in ordered]
    return paths


def autocast_for(device: str, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to bf16/fp16, nothing for fp32/tf32 (TF32 is a switch, see `set_tf32`)."""
    if precision in ("bf16", "fp16"):
        return torch.autocast(device_type=torch.device(device).type, dtype=DTYPES[precision])
    return contextlib.nullcontext()


def make_train_step(reference: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, path: StepPath,
                    device: str, compile_backend: str) -> Callable[[], float]:
    """A closure running one optimiser step of the recipe (Adam, the authors' losses) on `path`."""
    model = to_memory_format(copy.deepcopy(reference).train(), path.channels_last)
    if path.compiled:
        compile_network(model, compile_backend)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=path.precision == "fp16")
    images = to_memory_format(images, path.channels_last)
    generator = torch.Generator().manual_seed(0)

    def step() -> float:
        set_tf32(device, path.precision if path.precision in ("fp32", "tf32") else "fp32")
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(device, path.precision):
            output = model(images, 30.0, generator)
        loss = compute_losses(output, labels, LossConfig()).total
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return float(loss.detach())

    return step


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure(step: Callable[[], Any], repeats: int, device: str, warmup: int = 2) -> dict[str, Any]:
    """Median seconds of `repeats` calls after `warmup` (compilation, cuDNN autotuning), the
    warm-up seconds and the peak memory allocated (CUDA; None on CPU)."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    _synchronize(device)
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    return {"seconds": statistics.median(times), "warmup_s": warmup_s, "peak_memory_mb": peak}


def train_row(path: StepPath, timing: dict[str, Any], batch: int, reference_speed: float | None) -> dict[str, Any]:
    speed = batch / timing["seconds"]
    return {"path": path.name, "precision": path.precision, "channels_last": path.channels_last,
            "compiled": path.compiled, "images_per_s": speed, "peak_memory_mb": timing["peak_memory_mb"],
            "warmup_s": timing["warmup_s"],
            "recipe_hours": RECIPE_EPOCHS * RECIPE_EPOCH_IMAGES / speed / 3600,
            "ratio_vs_fp32": speed / reference_speed if reference_speed else 1.0}


def benchmark_training(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Every planned training path until the budget is spent; rows, skipped paths, reference."""
    device = args.device
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.height, args.width, device=device)
    labels = torch.randint(0, args.num_classes, (args.batch,), device=device)
    reference = build_model("igoas", args.num_classes, backbone=args.backbone).to(device)
    precisions = available_precisions(device, args.precisions.split(","))
    compile_modes = {"on": [True], "off": [False], "both": [False, True]}[
        args.compile if args.compile != "auto" else ("both" if torch.device(device).type == "cuda" else "off")]
    started, rows, skipped, fp32_speed = time.perf_counter(), [], [], None
    for path in plan_paths(precisions, compile_modes):
        if rows and time.perf_counter() - started > args.budget_s:
            skipped.append(path.name)
            continue
        try:
            timing = measure(make_train_step(reference, images, labels, path, device, args.compile_backend),
                             args.repeats, device)
        except Exception as err:  # a path this device or build cannot run is reported, not fatal
            log(f"{path.name}: failed ({type(err).__name__}: {str(err).splitlines()[0][:160]})")
            skipped.append(f"{path.name} (failed: {type(err).__name__})")
            continue
        row = train_row(path, timing, args.batch, fp32_speed)
        fp32_speed = fp32_speed or row["images_per_s"]
        rows.append(row)
        memory = f"{row['peak_memory_mb']:8.0f} MB" if row["peak_memory_mb"] is not None else "       - MB"
        log(f"{path.name:<32} {row['images_per_s']:9.1f} img/s  {memory}  x{row['ratio_vs_fp32']:.2f}  "
            f"90 epochs: {row['recipe_hours']:.2f} h  (warm-up {row['warmup_s']:.0f} s)")
    return {"rows": rows, "skipped": skipped, "precisions": precisions}


def benchmark_inference(args: argparse.Namespace, precisions: list[str]) -> dict[str, Any]:
    """Embedding speed of every uncompiled precision path and its smallest cosine to fp32's."""
    device = args.device
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.height, args.width, device=device)
    reference = build_model("igoas", args.num_classes, backbone=args.backbone).to(device)
    rows, fp32_embeddings = {}, None
    for precision in [p for p in precisions if p != "fp16" or torch.device(device).type == "cuda"]:
        for channels_last in (False, True):
            model = prepare_model_for_inference(copy.deepcopy(reference), precision, channels_last, device)
            batch = to_memory_format(images, channels_last)

            def run(model=model, batch=batch, precision=precision) -> torch.Tensor:
                with inference_context(device, precision):
                    return model(batch).float()

            timing = measure(run, args.repeats, device)
            embeddings = run()
            fp32_embeddings = embeddings if fp32_embeddings is None else fp32_embeddings
            name = precision + ("+channels_last" if channels_last else "")
            rows[name] = {"images_per_s": args.batch / timing["seconds"], "peak_memory_mb": timing["peak_memory_mb"],
                          "cosine_min_vs_fp32": float(F.cosine_similarity(embeddings, fp32_embeddings).min())}
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--batch", type=int, default=None, help="default: 64 (the recipe) on CUDA, 8 on CPU")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per path (default: 10 CUDA, 3 CPU)")
    parser.add_argument("--num-classes", type=int, default=702)
    parser.add_argument("--precisions", default=",".join(PRECISIONS),
                        help="comma-separated subset of " + ",".join(PRECISIONS) + " (fp32 always runs)")
    parser.add_argument("--compile", choices=("auto", "on", "off", "both"), default="auto",
                        help="torch.compile paths (auto: both on CUDA, off on CPU)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (eager: tracing only)")
    parser.add_argument("--budget-s", type=float, default=210.0,
                        help="stop starting new training paths after this many seconds (the GPU lease is short)")
    parser.add_argument("--no-inference", action="store_true", help="training paths only")
    args = parser.parse_args(argv)
    cuda = torch.device(args.device).type == "cuda"
    args.batch = args.batch or (64 if cuda else 8)
    args.repeats = args.repeats or (10 if cuda else 3)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    cuda = torch.device(args.device).type == "cuda"
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    log(f"training step, {args.backbone} {args.height}x{args.width}, batch {args.batch}, on "
        f"{torch.cuda.get_device_name(args.device) if cuda else 'cpu'}")
    training = benchmark_training(args, log)
    result: dict[str, Any] = {
        "benchmark": "train_step", "backbone": args.backbone, "batch": args.batch, "size": [args.height, args.width],
        "repeats": args.repeats, "device": torch.cuda.get_device_name(args.device) if cuda else "cpu",
        "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads(),
        "recipe": {"epochs": RECIPE_EPOCHS, "images_per_epoch": RECIPE_EPOCH_IMAGES},
        "train": training["rows"], "skipped": training["skipped"],
        "goal": {"train_images_per_s": 600, "note": "one H100, 5x the authors' two RTX 3090s (about 115 img/s)"},
    }
    if training["rows"]:
        fastest = max(training["rows"], key=lambda row: row["images_per_s"])
        result["fastest_train"] = fastest["path"]
        result["fastest_train_images_per_s"] = fastest["images_per_s"]
        result["fastest_train_recipe_hours"] = fastest["recipe_hours"]
    if not args.no_inference:
        result["inference"] = benchmark_inference(args, training["precisions"])
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
