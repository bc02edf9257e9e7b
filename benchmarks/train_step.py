"""Speed of the published recipe's training step (and inference batch) on one device, for
every precision path: fp32, TF32 (CUDA), bf16 autocast and fp16 autocast with gradient
scaling (CUDA), each with and without channels_last and torch.compile.

For each training path it prints images/s, the memory (CUDA: allocated before the warm-up
and the peak of the timed steps) and the projected time of the 90-epoch Occluded-Duke recipe
(15,618 training images per epoch, the training steps only: no data loading, no evaluation),
with ratios against the uncompiled fp32 path measured in the same run; for inference,
images/s and the smallest embedding cosine to fp32's (BatchNorm calibrated on the batch).
A table goes to stderr, one JSON line to stdout, and with --out the same document is
rewritten after every measured path.

    python benchmarks/train_step.py --device cuda --out DIR       # ResNet-50, 384x128, batch 64: the GPU check
    python benchmarks/train_step.py --backbone resnet18 --batch 8 # the CPU paths

Meant to fit the few minutes a lent GPU gives: the most informative paths first (the most
promising uncompiled one, the fp32 reference, the promising one compiled), and no path is
started that would not end within --budget-s, counted from process start; what did not fit
or failed is listed under `skipped`, never silently dropped.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from bench_common import (Budget, Results, attempt, calibrate_batchnorm, embedding_step, is_cuda, json_safe, measure,
                          output_file, prepare_device, set_tf32_switches)
from igoas.config import load_config, model_arguments, to_dict
from igoas.training.optim import build_optimizer, build_scheduler
from igoas.model.losses import LossConfig, compute_losses
from igoas.model import build_model
from igoas.model.osm import mask_activity
from igoas.compute.speed import (DTYPES, compile_network, cpu_has_native_bf16, has_native_bf16, prepare_model_for_inference,
                         to_memory_format)

RECIPE = "occluded_duke_igoas"  # the published recipe: model, losses, optimiser and schedule
RECIPE_EPOCHS, RECIPE_EPOCH_IMAGES = 90, 15_618  # Occluded-Duke
PROGRESS = 30.0  # the epoch position the occlusion is drawn for (its area grows until epoch 55)
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
PROMISE = ("bf16", "fp16", "tf32", "fp32")  # reduced precision first
REFERENCE = "fp32"  # the uncompiled fp32 path: every ratio's denominator


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
    cuda = is_cuda(device)
    usable = {"fp32": True, "tf32": cuda, "fp16": cuda, "bf16": has_native_bf16(device)}
    return ["fp32"] + [p for p in requested if p != "fp32" and usable[p]]


def plan_paths(precisions: list[str], compile_modes: list[bool]) -> list[StepPath]:
    """Most informative first: the most promising uncompiled path (reduced precision with
    channels_last), the fp32 reference, that promising path compiled; then the other
    uncompiled paths (seconds each), then the other compiled ones, in order of promise."""
    ordered = [p for p in PROMISE if p in precisions]
    eager = [StepPath(p, cl, False) for cl in (True, False) for p in ordered] if False in compile_modes else []
    compiled = [StepPath(p, cl, True) for cl in (True, False) for p in ordered] if True in compile_modes else []
    head = eager[:1] + [p for p in eager if p == StepPath("fp32", False, False)] + compiled[:1]
    return list(dict.fromkeys(head + eager + compiled))


def autocast_for(device: str, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to bf16/fp16, nothing for fp32/tf32 (TF32 is a switch, see `set_tf32_switches`)."""
    if precision in ("bf16", "fp16"):
        return torch.autocast(device_type=torch.device(device).type, dtype=DTYPES[precision])
    return contextlib.nullcontext()


def reset_compiler() -> None:
    """Forget earlier compilations, and make hitting dynamo's recompile limit an error.

    Every child compiled by `compile_network` shares one code object (Module._call_impl), so
    the cache entries of earlier paths (another autocast state or memory format) would use up
    dynamo's recompile limit and later paths would silently run most children eagerly.
    """
    torch._dynamo.reset()
    config = torch._dynamo.config
    for flag in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"):  # the second: torch before 2.6
        if hasattr(config, flag):
            setattr(config, flag, True)
            break


def recipe_config(backbone: str) -> Any:
    config = load_config(RECIPE)
    config.model.backbone = backbone
    return config


def make_train_step(reference: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, path: StepPath,
                    device: str, compile_backend: str, config: Any) -> Callable[[], float]:
    """A closure running one optimiser step of the recipe on `path`, with the trainer's host
    synchronisations: the loss checked finite before the backward pass, the gradient norm
    read back before the optimiser step (unless fp16's scaler skips bad steps itself), the
    logged loss terms, IGO area and mask activity read back after it."""
    set_tf32_switches(device, path.precision)
    model = to_memory_format(copy.deepcopy(reference).train(), path.channels_last)
    if path.compiled:
        reset_compiler()
        compile_network(model, compile_backend)
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, RECIPE_EPOCHS, max(RECIPE_EPOCH_IMAGES // len(images), 1))
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=path.precision == "fp16")
    loss_config = LossConfig(**to_dict(config.loss))
    parameters = [p for p in model.parameters() if p.requires_grad]
    images = to_memory_format(images, path.channels_last)
    generator = torch.Generator().manual_seed(0)

    def step() -> float:
        with autocast_for(device, path.precision):
            output = model(images, PROGRESS, generator)
        losses = compute_losses(output, labels, loss_config)
        if not bool(torch.isfinite(losses.total)):
            raise FloatingPointError(f"the loss became {float(losses.total.detach())}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses.total).backward()
        if not scaler.is_enabled() and not math.isfinite(float(torch.nn.utils.clip_grad_norm_(parameters, math.inf))):
            raise FloatingPointError("the gradient norm became non-finite")
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        terms = {name: value.item() for name, value in losses.terms.items()}
        record = {"loss": {"total": losses.total.item(), **terms},
                  "occluded_fraction": float(output.occluded_fraction), **mask_activity(output.visible_mask)}
        if losses.id_weights is not None and losses.id_weights.numel() > 1:
            record["id_weights"] = losses.id_weights.tolist()
        return record["loss"]["total"]

    return step


def train_row(path: StepPath, timing: dict[str, Any], batch: int, tf32: dict[str, bool] | None) -> dict[str, Any]:
    speed = batch / timing["seconds"]
    return {"path": path.name, "precision": path.precision, "channels_last": path.channels_last,
            "compiled": path.compiled, "images_per_s": speed, "seconds_per_step": timing["seconds"],
            "memory_before_mb": timing["memory_before_mb"], "peak_memory_mb": timing["peak_memory_mb"],
            "warmup_s": timing["warmup_s"], "tf32": tf32,
            "recipe_hours": RECIPE_EPOCHS * RECIPE_EPOCH_IMAGES / speed / 3600}


def add_ratios(rows: list[dict[str, Any]]) -> str:
    """Each row's speed against the uncompiled fp32 row (None without one) and, for a compiled
    row, against the same path uncompiled; returns what the ratios are against."""
    speeds = {row["path"]: row["images_per_s"] for row in rows}
    reference = speeds.get(REFERENCE)
    for row in rows:
        row["ratio_vs_fp32"] = row["images_per_s"] / reference if reference else None
        if row["compiled"]:
            eager = speeds.get(row["path"].removesuffix("+compile"))
            row["ratio_vs_uncompiled"] = row["images_per_s"] / eager if eager else None
    return (f"{REFERENCE} (uncompiled) in this run" if reference else
            f"none: the uncompiled {REFERENCE} path was not measured, so every ratio_vs_fp32 is null")


def summarise(document: dict[str, Any]) -> None:
    """Ratios, reference and the fastest path, recomputed from the rows so far."""
    rows = document["train"]
    document["ratio_reference"] = add_ratios(rows)
    if rows:
        fastest = max(rows, key=lambda row: row["images_per_s"])
        document.update(fastest_train=fastest["path"], fastest_train_images_per_s=fastest["images_per_s"],
                        fastest_train_recipe_hours=fastest["recipe_hours"])


def _table_line(row: dict[str, Any]) -> str:
    memory = f"{row['peak_memory_mb']:8.0f} MB" if row["peak_memory_mb"] is not None else "       - MB"
    ratio = f"x{row['ratio_vs_fp32']:.2f}" if row.get("ratio_vs_fp32") else "x  ?"
    return (f"{row['path']:<32} {row['images_per_s']:9.1f} img/s  {memory}  {ratio}  "
            f"90 epochs: {row['recipe_hours']:.2f} h  (warm-up {row['warmup_s']:.0f} s)")


def benchmark_training(args: argparse.Namespace, results: Results, budget: Budget, log: Callable[[str], None]) -> None:
    """Every planned training path that fits the budget, each row saved as soon as it is measured."""
    device, document = args.device, results.document
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.height, args.width, device=device)
    labels = torch.randint(0, args.num_classes, (args.batch,), device=device)
    config = recipe_config(args.backbone)
    reference = build_model(num_classes=args.num_classes, **model_arguments(config.model)).to(device)
    compile_modes = {"on": [True], "off": [False], "both": [False, True]}[
        args.compile if args.compile != "auto" else ("both" if is_cuda(device) else "off")]
    reserve = 0.0 if args.no_inference else args.inference_reserve_s
    expected = {False: 0.0, True: args.compile_estimate_s}  # seconds the next path of each kind should take
    measured_compiled = False
    for path in plan_paths(document["precisions"], compile_modes):
        if document["train"] or document["skipped"]:  # the first path always runs
            if not budget.fits(expected[path.compiled], reserve):
                document["skipped"].append({"path": path.name, "reason": "budget"})
                continue
        started = budget.elapsed()

        def run(path: StepPath = path) -> dict[str, Any]:
            tf32 = set_tf32_switches(device, path.precision)
            timing = measure(lambda: make_train_step(reference, images, labels, path, device, args.compile_backend,
                                                     config), args.repeats, device)
            return train_row(path, timing, args.batch, tf32)

        row = attempt(path.name, run, document["skipped"], log)
        if path.compiled:
            torch._dynamo.reset()  # its caches hold the compiled model
        if row is not None:
            took = budget.elapsed() - started
            if path.compiled and not measured_compiled:
                expected[True], measured_compiled = took, True
            elif not path.compiled:
                expected[False] = max(expected[False], took)
            document["train"].append(row)
            summarise(document)
            log(_table_line(row))
        results.save()


def benchmark_inference(args: argparse.Namespace, results: Results, budget: Budget, log: Callable[[str], None]) -> None:
    """Embedding speed of every uncompiled precision path and its smallest cosine to fp32's,
    on a network whose BatchNorm statistics are calibrated on the batch (with default
    statistics the suppression half of the embedding is ~1e-8 noise that fp16 flushes)."""
    device, document = args.device, results.document
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.height, args.width, device=device)
    config = recipe_config(args.backbone)
    reference = build_model(num_classes=args.num_classes, **model_arguments(config.model)).to(device)
    calibrate_batchnorm(reference, images)
    rows, fp32_embeddings, expected = document["inference"], None, 0.0
    for precision in [p for p in document["precisions"] if p != "fp16" or is_cuda(device)]:
        for channels_last in (False, True):
            name = precision + ("+channels_last" if channels_last else "")
            if rows and not budget.fits(expected):
                document["skipped"].append({"path": f"inference {name}", "reason": "budget"})
                continue
            started = budget.elapsed()

            def run(precision: str = precision, channels_last: bool = channels_last) -> dict[str, Any]:
                tf32 = set_tf32_switches(device, precision)
                timing = measure(lambda: embedding_step(
                    prepare_model_for_inference(copy.deepcopy(reference), precision, channels_last, device),
                    [to_memory_format(images, channels_last)], device, precision), args.repeats, device)
                return {"timing": timing, "tf32": tf32}

            done = attempt(f"inference {name}", run, document["skipped"], log)
            if done is not None:
                expected = max(expected, budget.elapsed() - started)
                embeddings = done["timing"]["output"]
                if name == "fp32":
                    fp32_embeddings = embeddings
                cosine = (float(F.cosine_similarity(embeddings, fp32_embeddings).min())
                          if fp32_embeddings is not None else None)
                rows[name] = {"images_per_s": args.batch / done["timing"]["seconds"],
                              "memory_before_mb": done["timing"]["memory_before_mb"],
                              "peak_memory_mb": done["timing"]["peak_memory_mb"], "tf32": done["tf32"],
                              "cosine_min_vs_fp32": cosine}
                log(f"inference {name:<22} {rows[name]['images_per_s']:9.1f} img/s  min cosine to fp32 "
                    f"{cosine if cosine is None else round(cosine, 6)}")
            results.save()


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
                        help="seconds from process start within which every started path must end (default 210)")
    parser.add_argument("--compile-estimate-s", type=float, default=60.0,
                        help="expected seconds of the first compiled path; later ones are expected to take as long "
                             "as the first did (default 60)")
    parser.add_argument("--inference-reserve-s", type=float, default=15.0,
                        help="seconds of the budget the training paths leave to the inference paths (default 15)")
    parser.add_argument("--no-inference", action="store_true", help="training paths only")
    parser.add_argument("--out", help="folder (or .json file) to rewrite the JSON document in after every path")
    args = parser.parse_args(argv)
    cuda = is_cuda(args.device)
    args.batch = args.batch or (64 if cuda else 8)
    args.repeats = args.repeats or (10 if cuda else 3)
    return args


def main(argv: list[str] | None = None, clock: Callable[[], float] | None = None) -> dict[str, Any]:
    """Run the benchmark; `clock` (seconds elapsed) replaces the process-start clock of the budget."""
    args = parse_args(argv)
    budget = Budget(args.budget_s, clock)
    cuda = is_cuda(args.device)
    prepare_device(args.device)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    device_name = torch.cuda.get_device_name(args.device) if cuda else "cpu"
    log(f"training step, {args.backbone} {args.height}x{args.width}, batch {args.batch}, on {device_name}")
    results = Results(output_file(args.out, "train_step.json"), {
        "benchmark": "train_step", "recipe_config": RECIPE, "backbone": args.backbone, "batch": args.batch,
        "size": [args.height, args.width], "repeats": args.repeats, "device": device_name,
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark, "budget_s": args.budget_s,
        "recipe": {"epochs": RECIPE_EPOCHS, "images_per_epoch": RECIPE_EPOCH_IMAGES},
        "goal": {"train_images_per_s": 600, "note": "one H100, 5x the authors' two RTX 3090s (about 115 img/s)"},
        "precisions": available_precisions(args.device, args.precisions.split(",")),
        "train": [], "skipped": [], "inference": {}, "finished": False,
    })
    results.save()
    benchmark_training(args, results, budget, log)
    if not args.no_inference:
        benchmark_inference(args, results, budget, log)
    results.document.update(finished=True, elapsed_s=budget.elapsed())
    results.save()
    print(json.dumps(json_safe(results.document)))
    return results.document


if __name__ == "__main__":
    main()
