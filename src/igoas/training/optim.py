"""Optimisers, learning-rate schedules with linear warm-up, and the "fixbase" warm-up.

Schedules are written as a learning-rate factor of the training progress and stepped
every iteration, so warm-up and cosine decay move smoothly while step decays still fall
exactly on epoch boundaries (as the authors' per-epoch `MultiStepLR` does: during epoch
e, 0-based, the rate is lr * gamma^(number of milestones <= e)).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from omegaconf import DictConfig
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from igoas.utils.errors import ConfigError


def _adam(params: Any, cfg: DictConfig) -> Optimizer:
    # L2 weight decay added to the gradient (torch.optim.Adam), as the authors trained.
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def _sgd(params: Any, cfg: DictConfig) -> Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov)


OPTIMIZERS: dict[str, Callable[[Any, Any], Optimizer]] = {"adam": _adam, "sgd": _sgd}


def build_optimizer(model: nn.Module, cfg: DictConfig) -> Optimizer:
    """The optimiser `cfg.name` over every parameter of `model` (frozen ones get no gradient
    and so are left untouched, weight decay included)."""
    if cfg.name not in OPTIMIZERS:
        raise ConfigError(f"optim.name={cfg.name!r} is unknown; choose one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[cfg.name](model.parameters(), cfg)


def _multi_step(epoch: int, progress: float, cfg: DictConfig, epochs: int) -> float:
    return cfg.gamma ** sum(1 for milestone in cfg.milestones if milestone <= epoch)


def _cosine(epoch: int, progress: float, cfg: DictConfig, epochs: int) -> float:
    span = max(epochs - cfg.warmup_epochs, 1e-12)
    fraction = min(max((progress - cfg.warmup_epochs) / span, 0.0), 1.0)
    return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * fraction))


def _constant(epoch: int, progress: float, cfg: DictConfig, epochs: int) -> float:
    return 1.0


# name -> factor(epoch (whole, 0-based), progress (fractional epoch), optim config, total epochs)
SCHEDULES: dict[str, Callable[[int, float, Any, int], float]] = {
    "multi_step": _multi_step,
    "cosine": _cosine,
    "constant": _constant,
}


def lr_factor(step: int, iters_per_epoch: int, cfg: DictConfig, epochs: int) -> float:
    """Learning-rate multiplier after `step` optimiser steps: warm-up times the schedule."""
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule={cfg.schedule!r} is unknown; choose one of {sorted(SCHEDULES)}")
    epoch, progress = step // iters_per_epoch, step / iters_per_epoch
    factor = SCHEDULES[cfg.schedule](epoch, progress, cfg, epochs)
    if progress < cfg.warmup_epochs:
        factor *= cfg.warmup_start_factor + (1 - cfg.warmup_start_factor) * progress / cfg.warmup_epochs
    return factor


def build_scheduler(optimizer: Optimizer, cfg: DictConfig, epochs: int, iters_per_epoch: int) -> LambdaLR:
    """A per-iteration scheduler following `lr_factor`; call `.step()` after every optimiser step."""
    if iters_per_epoch <= 0:
        raise ConfigError("the training set gives no complete batch; lower data.batch_size or use more images")
    lr_factor(0, iters_per_epoch, cfg, epochs)  # reports an unknown schedule name now
    # Plain values captured by a closure: LambdaLR saves no state for functions, and the
    # optimiser config is rebuilt from the run config on resume.
    settings = _ScheduleSettings(cfg)
    return LambdaLR(optimizer, lambda step: lr_factor(step, iters_per_epoch, settings, epochs))


class _ScheduleSettings:
    """A frozen copy of the schedule fields, so later config edits cannot move the rate."""

    def __init__(self, cfg: Any) -> None:
        for name in ("schedule", "milestones", "gamma", "warmup_epochs", "warmup_start_factor", "min_lr_factor"):
            value = getattr(cfg, name)
            setattr(self, name, list(value) if name == "milestones" else value)


def open_layers(model: nn.Module, names: Sequence[str] | None) -> None:
    """Train only the top-level children in `names` (all of them when None).

    Open children go to train mode with gradients on; the others to eval mode (their
    BatchNorm statistics stay put) with gradients off. The model object itself keeps its
    own mode, so the occlusion still runs during the "fixbase" epochs.
    """
    children = dict(model.named_children())
    if names is not None:
        unknown = sorted(set(names) - set(children))
        if unknown:
            raise ConfigError(
                f"train.fixbase_modules names {unknown}, which the model does not have; "
                f"its top-level modules are: {', '.join(children)}"
            )
    for name, child in children.items():
        trainable = names is None or name in names
        child.train(trainable)
        for parameter in child.parameters():
            parameter.requires_grad_(trainable)
