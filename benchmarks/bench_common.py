"""What the training-step and inference benchmarks share, so that a short GPU lease loses nothing.

- a time budget counted from process start (imports and CUDA start-up included);
- the device set up as a training run has it: cuDNN autotuning on, the TF32 switches set
  explicitly for every path rather than inherited from the previous one;
- memory released between paths (compiled models hold reference cycles: collect first),
  the peak counted over the timed steps only, after the warm-up's autotuning scratch;
- a failing path reported and skipped, never fatal, with the message of any exception;
- the result document rewritten atomically after every measured path, so a run killed by
  a timeout or an out-of-memory error keeps every row it finished.
"""
from __future__ import annotations

import gc
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from igoas.utils.seeding import use_deterministic_kernels
from igoas.utils.fileio import write_json
from igoas.compute.speed import inference_context

_IMPORTED = time.monotonic()
# The TF32 switches a fresh process starts with: what a run at bf16 or fp16 (which leaves
# them alone, see igoas.compute.speed.set_tf32) computes its fp32 operations with.
STARTUP_TF32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)


def is_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"


def process_elapsed() -> float:
    """Seconds since this process started (Linux /proc; elsewhere since this module was imported)."""
    try:
        with open("/proc/self/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()  # fields from the third on; the 22nd is the start time
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return max(uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


class Budget:
    """A run's allowance in seconds, counted by `clock` (default: from process start)."""

    def __init__(self, seconds: float, clock: Callable[[], float] | None = None) -> None:
        self.seconds = seconds
        self.clock = clock or process_elapsed

    def elapsed(self) -> float:
        return self.clock()

    def fits(self, estimate_s: float, reserve_s: float = 0.0) -> bool:
        """True when a task expected to take `estimate_s` ends within the allowance less `reserve_s`."""
        return self.clock() + estimate_s <= self.seconds - reserve_s


def prepare_device(device: str | torch.device) -> None:
    """Kernels as a (non-deterministic) training run picks them: cuDNN autotuning on."""
    if is_cuda(device):
        use_deterministic_kernels(False)


def set_tf32_switches(device: str | torch.device, precision: str) -> dict[str, bool] | None:
    """Set the TF32 switches for one path (CUDA): off for fp32, on for tf32, and the start-up
    values for bf16/fp16; returns them for the report (None on other devices)."""
    if not is_cuda(device):
        return None
    matmul, cudnn = {"fp32": (False, False), "tf32": (True, True)}.get(precision, STARTUP_TF32)
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = cudnn
    return {"matmul": matmul, "cudnn": cudnn}


def synchronize(device: str | torch.device) -> None:
    if is_cuda(device):
        torch.cuda.synchronize(device)


def release_memory(device: str | torch.device) -> None:
    """Free what earlier paths left: collect reference cycles (a compiled model's), then the cache."""
    gc.collect()
    if is_cuda(device):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _megabytes(count: int) -> float:
    return count / 2**20


def measure(make_step: Callable[[], Callable[[], Any]], repeats: int, device: str, warmup: int = 2) -> dict[str, Any]:
    """Build one path's step, time it and free it again.

    Returns the median seconds of `repeats` calls after `warmup` calls (compilation, cuDNN
    autotuning), the warm-up seconds, the last call's return value and, on CUDA, the memory
    allocated before the warm-up (weights, inputs and whatever stays resident) and the peak
    of the timed calls. Nothing of the step survives the return.
    """
    cuda = is_cuda(device)
    release_memory(device)
    step = make_step()
    try:
        synchronize(device)
        before = _megabytes(torch.cuda.memory_allocated(device)) if cuda else None
        start = time.perf_counter()
        for _ in range(warmup):
            step()
        synchronize(device)
        warmup_s = time.perf_counter() - start
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)  # autotuning and compilation scratch is not the step's
        times, output = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            output = step()
            synchronize(device)
            times.append(time.perf_counter() - start)
        peak = _megabytes(torch.cuda.max_memory_allocated(device)) if cuda else None
    finally:
        del step
        release_memory(device)
    return {"seconds": statistics.median(times), "warmup_s": warmup_s, "output": output,
            "memory_before_mb": before, "peak_memory_mb": peak}


def failure_text(err: BaseException) -> str:
    """`Type: first line of the message` (just the type for an empty message, e.g. a bare assert)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:160]}" if lines else type(err).__name__


def attempt(name: str, action: Callable[[], Any], skipped: list[dict[str, str]],
            log: Callable[[str], None]) -> Any:
    """`action()`, or None with the failure logged and listed in `skipped` (a path this device
    or build cannot run, an out-of-memory error: reported, not fatal)."""
    try:
        return action()
    except Exception as err:
        reason = failure_text(err)
        log(f"{name}: failed ({reason})")
        skipped.append({"path": name, "reason": f"failed: {reason}"})
        return None


def embedding_step(network: torch.nn.Module, batches: list[torch.Tensor], device: str,
                   precision: str) -> Callable[[], torch.Tensor]:
    """A closure embedding ready device batches with `network` (eval mode, its memory format
    set) at `precision`, as extraction runs it; returns the fp32 embeddings."""
    def step() -> torch.Tensor:
        set_tf32_switches(device, precision)
        with inference_context(device, precision):
            return torch.cat([network(batch).float() for batch in batches])

    return step


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


def output_file(out: str | None, name: str) -> Path | None:
    """Where a benchmark writes its document: `out` itself when it names a .json file, else `out`/`name`."""
    if not out:
        return None
    return Path(out) if out.endswith(".json") else Path(out) / name


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities written as strings (JSON holds no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


class Results:
    """A benchmark's document, rewritten atomically at `path` by every `save` (not written without one)."""

    def __init__(self, path: Path | None, document: dict[str, Any]) -> None:
        self.path = path
        self.document = document

    def save(self) -> None:
        if self.path is not None:
            write_json(self.path, json_safe(self.document))
