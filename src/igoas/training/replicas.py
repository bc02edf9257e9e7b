"""`train.replicas: N`: the training semantics of `nn.DataParallel` over N devices.

The authors trained with `nn.DataParallel` on two GPUs. DataParallel splits the batch
into N chunks (as `torch.chunk` does) and runs the model's forward once per chunk, so

- each replica draws its own occlusion (IGO rectangle and fill),
- each replica's BatchNorm normalises with the statistics of its own chunk (raw and
  occluded images of that chunk: 2 x 32 of the authors' 64), never synchronised,
- the running statistics kept are replica 0's: DataParallel's first replica shares the
  module's buffers, the others update copies that are thrown away,
- the outputs are gathered along the batch and the loss is computed over the whole batch.

`replicated_forward` does exactly this on one device. Under torchrun with one process per
replica (`world_size == replicas`), each process is one replica: DDP keeps rank 0's
buffers (it broadcasts them at every forward) and the loss terms are averaged over the
processes, which is the loss of the gathered batch. Every replica's occlusion draws come
from its own generator, seeded from one number drawn from the shared occlusion generator
per step, so a one-device run and a torchrun run with the same seed hide the same regions
and a resumed run continues the same draws.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from igoas.utils.errors import ConfigError
from igoas.utils.seeding import seed_for


def check_replicas(replicas: int, world_size: int) -> int:
    """How many replicas each process runs: all of them in one process, or one per process."""
    if replicas < 1:
        raise ConfigError(f"train.replicas must be 1 or more, got {replicas}")
    if world_size == 1 or replicas == 1:
        return replicas
    if replicas != world_size:
        raise ConfigError(f"train.replicas={replicas} with {world_size} processes: under torchrun each process is "
                          f"one DataParallel replica, so start {replicas} processes (or set train.replicas=1 for "
                          "one model over all processes with synchronised BatchNorm)")
    return 1


def replica_generators(generator: torch.Generator, replicas: int) -> list[torch.Generator]:
    """One generator per replica for this step, all derived from one draw of `generator`
    (so every process advances the shared generator alike)."""
    step_seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return [torch.Generator(device=generator.device).manual_seed(seed_for(step_seed, index))
            for index in range(replicas)]


def replicated_forward(model: nn.Module, images: Tensor, progress: float,
                       generators: Sequence[torch.Generator]) -> Any:
    """The training forward of `model` as DataParallel over `len(generators)` replicas.

    `images` is split like DataParallel's scatter (a batch smaller than the number of
    replicas uses fewer of them, as DataParallel does); replica i draws its occlusion from
    `generators[i]`. Replica 0 runs `model` itself (so its BatchNorm updates the running
    statistics); the others run with copies of every buffer, whose updates are dropped.
    Returns the outputs gathered along the batch.
    """
    chunks = images.chunk(len(generators))
    outputs = [model(chunks[0], progress, generators[0])]
    for chunk, generator in zip(chunks[1:], generators[1:]):
        buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
        outputs.append(functional_call(model, buffers, (chunk, progress, generator)))
    return gather(outputs)


def gather(outputs: Sequence[Any]) -> Any:
    """Concatenate per-replica training outputs along the batch, as DataParallel's gather:
    batch tensors are joined (0-d tensors and plain numbers, such as the occluded fraction,
    averaged), dicts and sequences element by element; flags and other values are the
    first replica's."""
    if len(outputs) == 1:
        return outputs[0]
    first = outputs[0]
    joined = {field.name: _join([getattr(out, field.name) for out in outputs])
              for field in dataclasses.fields(first)}
    return dataclasses.replace(first, **joined)


def _join(values: list[Any]) -> Any:
    first = values[0]
    if first is None:
        return None
    if isinstance(first, Tensor):
        return torch.stack(values).mean(dim=0) if first.dim() == 0 else torch.cat(values)
    if isinstance(first, dict):
        return {key: _join([value[key] for value in values]) for key in first}
    if isinstance(first, (list, tuple)):
        return type(first)(_join(list(items)) for items in zip(*values))
    if isinstance(first, bool) or not isinstance(first, (int, float)):
        return first
    return sum(values) / len(values)
