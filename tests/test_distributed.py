"""Two CPU processes (torchrun, gloo) train and evaluate like one process with the same global batch.

What makes the comparison valid: the global batch is split between the processes (each
gets its share of the same sampler order); BatchNorm statistics are synchronised across
processes; the loss terms are averaged over processes before the adaptive weights are
taken; every process draws the same occlusion. Flips are off so both runs see the very
same pixels. The two runs then differ only by floating-point summation order.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from igoas.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

SETTINGS = """\
data:
  dataset: synthetic
  root: {root}
  height: 32
  width: 16
  batch_size: 8
  num_workers: 0
  augment: {{flip: 0.0}}
model:
  backbone: resnet18
  pretrained: false
train:
  epochs: 2
  fixbase_epochs: 1
  device: cpu
  precision: fp32
  progress_bar: false
  tensorboard: false
  log_every: 1
eval:
  every: 1
  num_workers: 0
"""


def _launch(command: list[str], env_threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(env_threads)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_two_gloo_processes_match_one_process(synthetic_root: Path, tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(SETTINGS.format(root=synthetic_root))
    single, double = tmp_path / "one_process", tmp_path / "two_processes"
    _launch([sys.executable, "-m", "igoas", "train", str(config), f"train.output_dir={single}"], env_threads=2)
    _launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             "-m", "igoas", "train", str(config), f"train.output_dir={double}"], env_threads=1)

    # the same loss, step by step (every process logs nothing: rank 0 alone writes the logs)
    steps = [[json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
             for run in (single, double)]
    assert len(steps[0]) == len(steps[1]) == 8
    for a, b in zip(*steps):
        assert b["loss"]["total"] == pytest.approx(a["loss"]["total"], rel=1e-4), a["iteration"]
        assert b["id_weights"] == pytest.approx(a["id_weights"], rel=1e-4)

    one, two = (load_checkpoint(run / "checkpoints/last.pth") for run in (single, double))
    assert one["iteration"] == two["iteration"] == 8 and two["world_size"] == 2
    for key, tensor in one["model"].items():
        if tensor.is_floating_point():
            assert torch.allclose(tensor, two["model"][key], rtol=1e-3, atol=1e-5), key
        else:
            assert torch.equal(tensor, two["model"][key]), key
    # evaluation: each process embeds its share, rank 0 ranks the gathered features
    for query_set, values in one["metrics"].items():
        for name, value in values.items():
            assert two["metrics"][query_set][name] == pytest.approx(value, abs=1e-3), (query_set, name)
