"""What a resumed run may change, and the checks that keep a resume exact or refuse it.

`igoas train --resume RUN key=value` continues the run from its last checkpoint. Settings
read afresh at every use (learning rate and schedule, loss weights, logging, evaluation,
the data's location) take effect from the resume point; the optimiser's hyperparameters
are put back from the new config after its state is loaded, and the scheduler's base rates
rebuilt, so an `optim.lr` override is the rate actually used. Settings the checkpoint fixes
(the network, the data order, the seed) are refused by name instead of being ignored.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import torch
from torch import nn

from igoas.errors import CheckpointError, ConfigError

# Keys (or whole sections) a resumed run cannot change: the weights, the sampler's data
# order and the random streams in the checkpoint belong to these values.
FIXED_ON_RESUME = (
    "model", "data.dataset", "data.options", "data.height", "data.width", "data.mean", "data.std",
    "data.sampler", "data.num_instances", "data.batch_size", "data.drop_last", "optim.name", "train.seed",
)
# Keys that differ by nature between the saved config and a resume.
IGNORED = ("train.output_dir", "train.stop_after_iters")


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested mapping (lists are compared whole)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_settings(saved: Mapping[str, Any], current: Mapping[str, Any], source: str) -> list[str]:
    """Notes on the settings a resume changes; a ConfigError naming those it cannot change."""
    old, new = flatten(saved), flatten(current)
    changed = sorted(key for key in set(old) | set(new)
                     if old.get(key) != new.get(key) and not key.startswith(IGNORED))
    fixed = [key for key in changed if key.startswith(tuple(f"{k}." for k in FIXED_ON_RESUME) + FIXED_ON_RESUME)]
    if fixed:
        described = ", ".join(f"{key} ({old.get(key)!r} -> {new.get(key)!r})" for key in fixed)
        raise ConfigError(f"cannot resume {source} with {described}: the checkpoint's weights, data order and "
                          "random streams belong to the old value. Drop the override, or start a new run "
                          "with --out NEW_DIR.")
    return [f"{key} {old.get(key)!r} -> {new.get(key)!r} takes effect from here" for key in changed]


def optimiser_settings(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The hyperparameters of each parameter group (what `load_state_dict` would overwrite)."""
    return [{key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups]


def reapply_settings(optimizer: torch.optim.Optimizer, scheduler: Any, settings: list[dict[str, Any]]) -> None:
    """Put the new config's hyperparameters back after loading a checkpoint's optimiser and
    scheduler state, and set each group's rate for the current step from the new base rates."""
    for group, fresh in zip(optimizer.param_groups, settings):
        group.update({key: value for key, value in fresh.items() if key != "lr"})
    scheduler.base_lrs = [fresh["initial_lr"] for fresh in settings]
    sync_learning_rates(optimizer, scheduler)


def sync_learning_rates(optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """Each group's rate for the scheduler's current step (the formula LambdaLR.step uses)."""
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)


class Position(NamedTuple):
    """Where a resumed run continues. `epoch_end_pending`: the checkpoint was written after
    an epoch's last batch but before that epoch's end steps (evaluation, last.pth), as
    earlier versions did when `train.stop_after_iters` fell on an epoch's last batch; the
    run performs them before training on."""

    epoch: int
    batch: int
    iteration: int
    epoch_end_pending: bool = False


def check_position(payload: Mapping[str, Any], epochs: int, iters_per_epoch: int, same_world: bool,
                   source: str) -> Position:
    """The checkpoint's (epoch, batch, iteration), refused when out of range for this run.

    A checkpoint at (e, iters_per_epoch) reads as (e + 1, 0) with the end of epoch e + 1
    (counted from 1) pending."""
    try:
        epoch, batch, iteration = (int(payload[key]) for key in ("epoch", "batch", "iteration"))
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{source}: its epoch/batch/iteration entries are missing or not numbers; "
                              "the checkpoint is damaged") from None
    pending = batch == iters_per_epoch and 0 <= epoch < epochs
    if pending:
        epoch, batch = epoch + 1, 0
    problems = []
    if not 0 <= epoch <= epochs:
        problems.append(f"epoch {epoch} is outside 0..{epochs} (train.epochs)")
    if not 0 <= batch < iters_per_epoch:
        problems.append(f"batch {batch} is outside 0..{iters_per_epoch - 1} (iterations per epoch)")
    if same_world and iteration != epoch * iters_per_epoch + batch:
        problems.append(f"iteration {iteration} is not epoch x {iters_per_epoch} + batch "
                        "(the training set changed size?)")
    if problems:
        raise CheckpointError(f"{source}: cannot continue from its position: {'; '.join(problems)}. Resume with "
                              "the run's own data and train.epochs, or start a new run from its weights.")
    return Position(epoch, batch, iteration, pending)


def nonfinite_tensors(module: nn.Module) -> list[str]:
    """Names of the parameters and buffers (BatchNorm running statistics included) holding NaN or Inf."""
    return [name for name, tensor in module.state_dict().items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
