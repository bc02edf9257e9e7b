"""The CPU cross-process BatchNorm in a real two-process gloo group: its statistics cover
both processes' shares, and under bf16 autocast it computes in fp32 (the running
statistics are fp32 buffers) and returns the input's dtype, as torch's BatchNorm does."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from igoas.compute.distributed import CrossProcessBatchNorm

pytestmark = pytest.mark.slow  # two processes


def _batch() -> torch.Tensor:
    """The global batch: 4 images, 3 channels, in bf16 as an autocast convolution returns them."""
    return torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0)).mul(3).add(1).bfloat16()


def _worker(rank: int, store: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        full = _batch()
        reference = torch.nn.BatchNorm2d(3).train()
        expected = reference(full.float())[rank * 2:(rank + 1) * 2]  # fp32 on the whole batch
        layer = CrossProcessBatchNorm(3).train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = layer(full[rank * 2:(rank + 1) * 2])
        assert output.dtype == torch.bfloat16
        assert layer.running_mean.dtype == layer.running_var.dtype == torch.float32
        torch.testing.assert_close(layer.running_mean, reference.running_mean)
        torch.testing.assert_close(layer.running_var, reference.running_var)
        torch.testing.assert_close(output.float(), expected, atol=2e-2, rtol=1e-2)  # bf16 output rounding
    finally:
        dist.destroy_process_group()


def test_bf16_input_trains_with_fp32_statistics_across_two_processes(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "store"),), nprocs=2)
