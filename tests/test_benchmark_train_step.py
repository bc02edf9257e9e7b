"""The GPU training-step benchmark's code paths, run on the CPU with a tiny network so the
script works the first time it meets a GPU (fp16 with gradient scaling, channels_last and
torch.compile included; the timings here mean nothing)."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_step_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _tiny(bench):
    torch.manual_seed(0)
    reference = bench.build_model("igoas", 4, backbone="resnet18")
    return reference, torch.randn(2, 3, 64, 32), torch.randint(0, 4, (2,))


def test_plan_runs_uncompiled_paths_first_then_the_promising_compiled_ones(bench) -> None:
    plan = [path.name for path in bench.plan_paths(["fp32", "tf32", "bf16", "fp16"], [False, True])]
    assert plan[:2] == ["fp32", "fp32+channels_last"] and len(plan) == 16
    assert plan[8] == "bf16+channels_last+compile" and plan[9] == "fp16+channels_last+compile"
    assert bench.available_precisions("cpu", ["fp16", "tf32", "bf16"])[0] == "fp32"
    assert "fp16" not in bench.available_precisions("cpu", ["fp16"])  # fp16 autocast is for CUDA


# fp16 is emulated on a CPU and takes minutes there: a slow test, but its gradient scaling is the CUDA path.
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", pytest.param("fp16", marks=pytest.mark.slow)])
def test_every_precision_path_steps_and_learns(bench, precision: str) -> None:
    reference, images, labels = _tiny(bench)
    step = bench.make_train_step(reference, images, labels, bench.StepPath(precision, True, False), "cpu", "eager")
    losses = [step() for _ in range(3)]
    assert all(math.isfinite(loss) for loss in losses)
    timing = bench.measure(step, repeats=1, device="cpu", warmup=0)
    row = bench.train_row(bench.StepPath(precision, True, False), timing, batch=2, reference_speed=None)
    assert row["recipe_hours"] == pytest.approx(90 * 15_618 / row["images_per_s"] / 3600)
    assert row["peak_memory_mb"] is None  # measured on CUDA only


@pytest.mark.slow
def test_compiled_path_and_the_whole_command(bench, capsys: pytest.CaptureFixture) -> None:
    reference, images, labels = _tiny(bench)
    step = bench.make_train_step(reference, images, labels, bench.StepPath("bf16", True, True), "cpu", "eager")
    assert math.isfinite(step()) and math.isfinite(step())
    result = bench.main(["--backbone", "resnet18", "--batch", "2", "--height", "64", "--width", "32", "--repeats", "1",
                         "--precisions", "fp32", "--compile", "both", "--compile-backend", "eager"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["fastest_train"] == result["fastest_train"]
    assert {row["path"] for row in printed["train"]} | set(printed["skipped"]) == {
        "fp32", "fp32+channels_last", "fp32+channels_last+compile", "fp32+compile"}
    assert printed["inference"]["fp32"]["cosine_min_vs_fp32"] == pytest.approx(1.0, abs=1e-5)
