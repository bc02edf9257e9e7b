"""The GPU training-step benchmark's code paths, run on the CPU with a tiny network (and
torch.cuda replaced where a path is CUDA-only), so the script works the first time it meets
a GPU: fp16 with gradient scaling, channels_last, torch.compile, the budget, the results
written after every path, failures reported (the timings here mean nothing)."""
from __future__ import annotations

import copy
import gc
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
TINY = ["--backbone", "resnet18", "--batch", "2", "--height", "64", "--width", "32", "--repeats", "1",
        "--num-classes", "4", "--budget-s", "1e6"]


def load_script(name: str, monkeypatch: pytest.MonkeyPatch):
    """A benchmark script as a module (its folder importable, as when it runs as a script)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):
    return load_script("train_step", monkeypatch)


@pytest.fixture
def common(bench):
    return sys.modules["bench_common"]


@pytest.fixture
def dynamo():
    """Compilation state as it was before the test (the benchmark sets a process-wide flag)."""
    saved = torch._dynamo.config.fail_on_recompile_limit_hit
    yield
    torch._dynamo.config.fail_on_recompile_limit_hit = saved
    torch._dynamo.reset()


def _tiny(bench):
    torch.manual_seed(0)
    config = bench.recipe_config("resnet18")
    reference = bench.build_model(num_classes=4, **bench.model_arguments(config.model))
    return reference, torch.randn(2, 3, 64, 32), torch.randint(0, 4, (2,)), config


def _fake_timing(seconds: float = 0.5) -> dict:
    return {"seconds": seconds, "warmup_s": 1.0, "output": 1.0, "memory_before_mb": None, "peak_memory_mb": None}


def test_plan_runs_the_most_informative_paths_first(bench) -> None:
    plan = [path.name for path in bench.plan_paths(["fp32", "tf32", "bf16", "fp16"], [False, True])]
    assert plan[:3] == ["bf16+channels_last", "fp32", "bf16+channels_last+compile"]
    assert len(plan) == len(set(plan)) == 16
    assert plan.index("tf32") < plan.index("fp16+channels_last+compile")  # uncompiled paths cost seconds
    assert [p.name for p in bench.plan_paths(["fp32"], [True])] == ["fp32+channels_last+compile", "fp32+compile"]
    assert bench.available_precisions("cpu", ["fp16", "tf32", "bf16"])[0] == "fp32"
    assert "fp16" not in bench.available_precisions("cpu", ["fp16"])  # fp16 autocast is for CUDA


def test_ratios_are_against_the_uncompiled_fp32_row_only(bench) -> None:
    row = lambda path, speed, compiled=False: {"path": path, "images_per_s": speed, "compiled": compiled}  # noqa: E731
    rows = [row("bf16+channels_last", 40.0), row("fp32+compile", 30.0, True)]  # the fp32 reference failed
    assert "null" in bench.add_ratios(rows)
    assert [r["ratio_vs_fp32"] for r in rows] == [None, None]
    rows.append(row("fp32", 10.0))
    assert bench.add_ratios(rows).startswith("fp32 (uncompiled)")
    assert [r["ratio_vs_fp32"] for r in rows] == [4.0, 3.0, 1.0]
    assert rows[1]["ratio_vs_uncompiled"] == 3.0


def test_tf32_switches_are_set_for_every_path(common) -> None:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        assert common.set_tf32_switches("cuda", "tf32") == {"matmul": True, "cudnn": True}
        assert common.set_tf32_switches("cuda", "bf16") == dict(zip(("matmul", "cudnn"), common.STARTUP_TF32))
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == common.STARTUP_TF32
        assert common.set_tf32_switches("cuda", "fp32") == {"matmul": False, "cudnn": False}
        assert common.set_tf32_switches("cpu", "tf32") is None
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_cuda_measure_autotunes_and_counts_the_peak_after_warm_up(common, monkeypatch: pytest.MonkeyPatch) -> None:
    events = []
    for name in ("synchronize", "empty_cache", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda *args, name=name: events.append(name))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *args: 3 * 2**20)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *args: 7 * 2**20)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda flag: events.append(f"deterministic={flag}"))
    common.prepare_device("cuda")
    assert torch.backends.cudnn.benchmark is True and "deterministic=False" in events
    events.clear()
    timing = common.measure(lambda: (lambda: events.append("step")), repeats=2, device="cuda", warmup=2)
    steps = [i for i, event in enumerate(events) if event == "step"]
    resets = [i for i, event in enumerate(events) if event == "reset_peak_memory_stats"]
    assert any(steps[1] < i < steps[2] for i in resets)  # after the warm-up, before the timed steps
    assert timing["memory_before_mb"] == 3.0 and timing["peak_memory_mb"] == 7.0


@pytest.mark.slow
def test_nothing_of_a_path_survives_measure(common, bench, dynamo) -> None:
    reference, images, _, _ = _tiny(bench)
    refs = []

    def make_step():
        model = bench.compile_network(copy.deepcopy(reference).eval(), "eager")
        refs.extend(weakref.ref(child) for child in model.children())  # each compiled child is a reference cycle

        def step():
            with torch.no_grad():
                return model(images)[0, 0].item()
        return step

    gc.disable()  # only measure's own collection may free it
    try:
        bench.reset_compiler()
        common.measure(make_step, repeats=1, device="cpu", warmup=0)
        assert refs and all(ref() is None for ref in refs)
    finally:
        gc.enable()


@pytest.mark.slow
def test_compiled_paths_each_compile_every_child(bench, dynamo) -> None:
    """Every child's compiled call shares one code object: without a reset between paths and
    room in dynamo's recompile limit, later children and paths would silently run eagerly."""
    from torch._dynamo.utils import counters

    reference, images, labels, config = _tiny(bench)
    graphs = []
    for path in (bench.StepPath("fp32", False, True),) * 2:  # a fresh copy each time, as every path has
        before = counters["stats"]["unique_graphs"]
        step = bench.make_train_step(reference, images, labels, path, "cpu", "eager", config)
        assert math.isfinite(step())
        graphs.append(counters["stats"]["unique_graphs"] - before)
        del step
    assert graphs[0] == graphs[1] > 8
    assert torch._dynamo.config.fail_on_recompile_limit_hit  # a fallback to eager fails the path


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", pytest.param("fp16", marks=pytest.mark.slow)])
def test_every_precision_path_steps_and_learns(bench, precision: str) -> None:
    # fp16 is emulated on a CPU and takes minutes there: a slow test, but its gradient scaling is the CUDA path.
    reference, images, labels, config = _tiny(bench)
    path = bench.StepPath(precision, True, False)
    step = bench.make_train_step(reference, images, labels, path, "cpu", "eager", config)
    losses = [step() for _ in range(2)]
    assert all(math.isfinite(loss) for loss in losses) and losses[1] != losses[0]
    row = bench.train_row(path, _fake_timing(), batch=2, tf32=None)
    assert row["recipe_hours"] == pytest.approx(90 * 15_618 / 4.0 / 3600)


def test_a_non_finite_loss_stops_the_step_before_the_backward_pass(bench, monkeypatch) -> None:
    reference, images, labels, config = _tiny(bench)
    path = bench.StepPath("fp32", False, False)
    step = bench.make_train_step(reference, images, labels, path, "cpu", "eager", config)
    real = bench.compute_losses

    def nan_loss(*args, **kwargs):
        losses = real(*args, **kwargs)
        losses.total = losses.total * float("nan")
        return losses

    monkeypatch.setattr(bench, "compute_losses", nan_loss)
    with pytest.raises(FloatingPointError, match="loss"):
        step()


def test_failures_with_empty_messages_are_listed_as_skipped(bench, monkeypatch, capsys) -> None:
    def broken(*args, **kwargs):
        raise AssertionError()  # what a compiler's bare assert raises

    monkeypatch.setattr(bench, "make_train_step", broken)
    result = bench.main(TINY + ["--precisions", "fp32", "--compile", "off", "--no-inference"])
    assert result["train"] == [] and result["finished"]
    assert {entry["path"]: entry["reason"] for entry in result["skipped"]} == {
        "fp32+channels_last": "failed: AssertionError", "fp32": "failed: AssertionError"}
    assert "fp32: failed (AssertionError)" in capsys.readouterr().err


def test_every_measured_row_is_on_disk_when_the_run_dies(bench, monkeypatch, tmp_path) -> None:
    calls = []

    def measure(make_step, repeats, device, warmup=2):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # a kill: nothing after it runs
        return _fake_timing()

    monkeypatch.setattr(bench, "measure", measure)
    with pytest.raises(KeyboardInterrupt):
        bench.main(TINY + ["--precisions", "fp32", "--compile", "both", "--compile-backend", "eager",
                           "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "train_step.json").read_text())
    assert [row["path"] for row in saved["train"]] == ["fp32+channels_last", "fp32"]
    assert saved["finished"] is False and saved["train"][0]["ratio_vs_fp32"] == 1.0


def test_no_path_starts_that_would_overrun_the_budget(bench, monkeypatch) -> None:
    clock = [0.0]

    def measure(make_step, repeats, device, warmup=2):
        compiled = len(calls) >= 2  # the plan: fp32+channels_last, fp32, then the compiled ones
        clock[0] += 50.0 if compiled else 5.0
        calls.append(compiled)
        return _fake_timing()

    calls: list[bool] = []
    monkeypatch.setattr(bench, "measure", measure)
    argv = TINY[:-2] + ["--precisions", "fp32", "--compile", "both", "--no-inference", "--compile-estimate-s", "60"]
    result = bench.main(argv + ["--budget-s", "69"], clock=lambda: clock[0])
    assert calls == [False, False] and [s["path"] for s in result["skipped"]] == [
        "fp32+channels_last+compile", "fp32+compile"]  # 10 s + the first compile's 60 s estimate > 69 s
    clock[0], calls[:] = 0.0, []
    result = bench.main(argv + ["--budget-s", "100"], clock=lambda: clock[0])
    assert calls == [False, False, True]  # at 60 s the first compiled path's 50 s no longer fit
    assert result["skipped"] == [{"path": "fp32+compile", "reason": "budget"}]


@pytest.mark.slow
def test_inference_cosines_are_taken_on_calibrated_batchnorm(bench, common, monkeypatch) -> None:
    """With default statistics the suppression half is ~1e-8 noise (fp16 flushes it): calibrate first."""
    assert bench.calibrate_batchnorm is common.calibrate_batchnorm  # the shared function, not a copy
    calibrated = []
    monkeypatch.setattr(bench, "calibrate_batchnorm",
                        lambda network, batch: calibrated.append(network) or common.calibrate_batchnorm(network, batch))
    document = {"precisions": ["fp32"], "inference": {}, "skipped": []}
    args = bench.parse_args(TINY + ["--precisions", "fp32"])
    bench.benchmark_inference(args, common.Results(None, document), common.Budget(1e6, lambda: 0.0), print)
    assert calibrated and not calibrated[0].training
    assert set(document["inference"]) == {"fp32", "fp32+channels_last"}
    assert document["inference"]["fp32+channels_last"]["cosine_min_vs_fp32"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_the_gpu_check_script_runs_its_cpu_smoke_mode(tmp_path) -> None:
    """The one-command GPU check, its CPU twin: both scripts run and leave their documents."""
    if shutil.which("timeout") is None:
        pytest.skip("coreutils timeout is not available")
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH="")
    done = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--smoke", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    train = json.loads((tmp_path / "train_step.json").read_text())
    inference = json.loads((tmp_path / "inference.json").read_text())
    assert train["finished"] and {row["path"] for row in train["train"]} == {
        "fp32", "fp32+channels_last", "fp32+channels_last+compile", "fp32+compile"}
    assert inference["finished"] and "pytorch_fp32" in inference["images_per_s"]
    assert (tmp_path / "train_step.log").read_text().startswith("training step")
