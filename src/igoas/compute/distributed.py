"""Multi-process training with `torchrun`: process group, model wrapping, feature gathering.

A run started by `torchrun --nproc_per_node N [--nnodes M ...] -m igoas train ...` finds
RANK / WORLD_SIZE / LOCAL_RANK in its environment and joins a process group: NCCL when it
trains on CUDA, Gloo on CPU. Without those variables everything degrades to one process
and every helper here is a no-op, so the trainer has a single code path.

BatchNorm: each process sees only its share of the global batch, so by default the
statistics are synchronised across processes (torch's SyncBatchNorm on GPU; on CPU, where
torch has none, `CrossProcessBatchNorm` below) and a distributed step computes what one
process would compute on the whole batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from igoas.utils.errors import ConfigError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the run, and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, checkpoints and evaluation results."""
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0, option: str = "train.device") -> torch.device:
    """'auto' -> this process's GPU when there is one, else the CPU; explicit names are
    checked, and a refusal names `option`, where the user set it."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{option}={name!r} is not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{option}={name!r} but no CUDA device is available; use {option}=cpu (or auto)")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def init_distributed(device_name: str = "auto", timeout_s: float = 1800.0) -> DistributedContext:
    """Join the process group torchrun describes (or none) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown(ctx: DistributedContext) -> None:
    """Leave the process group (safe to call when there is none)."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    if ctx.enabled:
        dist.barrier()


def wrap_model(model: nn.Module, ctx: DistributedContext) -> nn.Module:
    """DistributedDataParallel over the parameters that currently require gradients.

    Built again whenever the trainable set changes (end of the fixbase epochs): DDP fixes
    its gradient buckets when it is constructed.
    """
    if not ctx.enabled:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def shard(count: int, ctx: DistributedContext) -> slice:
    """This process's contiguous share of `count` items (shares differ by at most one)."""
    start = count * ctx.rank // ctx.world_size
    return slice(start, count * (ctx.rank + 1) // ctx.world_size)


def gather_rows(local: Tensor, ctx: DistributedContext) -> Tensor:
    """Concatenate every process's rows in rank order (shares may differ in length)."""
    if not ctx.enabled:
        return local
    device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    local = local.to(device).contiguous()
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], device=device))
    longest = int(max(size.item() for size in sizes))
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local
    gathered = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([part[: int(size.item())] for part, size in zip(gathered, sizes)]).cpu()


def gather_objects(value: Any, ctx: DistributedContext) -> list[Any]:
    """Every process's `value` (any picklable object), in rank order; `[value]` without a group."""
    if not ctx.enabled:
        return [value]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return gathered


class _SumAcross(torch.autograd.Function):
    """All-reduce (sum) with a gradient: each process's input receives the sum of every
    process's output gradient, which is what the global computation's gradient is."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def sum_across(values: Tensor) -> Tensor:
    """Differentiable sum over the processes of the current group."""
    return _SumAcross.apply(values)


def average_across(values: Tensor, ctx: DistributedContext) -> Tensor:
    """Mean over processes, differentiable, for quantities that must be global (loss terms)."""
    if not ctx.enabled:
        return values
    return sum_across(values) / ctx.world_size


def any_across(flag: bool, ctx: DistributedContext) -> bool:
    """True if `flag` is true in any process (so every process takes the same branch)."""
    if not ctx.enabled:
        return flag
    device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class CrossProcessBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover the batches of all processes.

    For CPU process groups (torch's SyncBatchNorm needs a GPU). Two differentiable
    all-reduces per layer: the sum, then the sum of squared deviations from the global mean
    (more accurate than E[x^2] - E[x]^2). Same parameters and buffers as the layer it
    replaces, so checkpoints are unchanged.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-d input, got {input.dim()}-d")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        # In fp32 whatever the input's dtype, as torch's BatchNorm does under autocast: bf16
        # sums lose precision, and the running statistics are fp32 buffers.
        values = input.float()
        dims = [0] + list(range(2, values.dim()))
        shape = [1, -1] + [1] * (values.dim() - 2)
        count = torch.tensor([values.numel() // values.shape[1]], dtype=torch.float32, device=values.device)
        total = sum_across(torch.cat([values.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        centred = values - mean.view(shape)
        var = sum_across(centred.pow(2).sum(dims)) / n
        output = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_((var * n / (n - 1)).detach(), momentum)
        return output.to(input.dtype)


def convert_sync_batchnorm(model: nn.Module, ctx: DistributedContext) -> nn.Module:
    """Replace every BatchNorm layer by its cross-process form (no-op for one process)."""
    if not ctx.enabled:
        return model
    if ctx.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu(model)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CrossProcessBatchNorm):
        replacement = CrossProcessBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                            module.track_running_stats)
        replacement.load_state_dict(module.state_dict())
        replacement.train(module.training)
        return replacement
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child))
    return module
