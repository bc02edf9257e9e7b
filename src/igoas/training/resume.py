"""What a resumed run may change, and the pure checks that keep a resume exact or refuse it.

`igoas train --resume RUN key=value` continues the run from its last checkpoint. Settings
read afresh at every use (learning rate and schedule, loss weights, logging, evaluation,
the data's location) take effect from the resume point; the optimiser's hyperparameters
are put back from the new config after its state is loaded, and the scheduler's base rates
rebuilt, so an `optim.lr` override is the rate actually used. Settings the checkpoint fixes
(the network, the data order, the seed) are refused by name instead of being ignored.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from igoas.config import keys_marked
from igoas.utils.errors import ConfigError

# Keys (or whole sections) a resumed run cannot change, and keys that differ by nature
# between the saved config and a resume: declared on the keys in igoas.config.
FIXED_ON_RESUME = keys_marked("fixed")
IGNORED = keys_marked("ignored")


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


def reapply_settings(optimizer: torch.optim.Optimizer, scheduler: LambdaLR, settings: list[dict[str, Any]]) -> None:
    """Put the new config's hyperparameters back after loading a checkpoint's optimiser and
    scheduler state, and set each group's rate for the current step from the new base rates."""
    for group, fresh in zip(optimizer.param_groups, settings):
        group.update({key: value for key, value in fresh.items() if key != "lr"})
    scheduler.base_lrs = [fresh["initial_lr"] for fresh in settings]
    sync_learning_rates(optimizer, scheduler)


def sync_learning_rates(optimizer: torch.optim.Optimizer, scheduler: LambdaLR) -> None:
    """Each group's rate for the scheduler's current step (the formula LambdaLR.step uses)."""
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)


def nonfinite_tensors(module: nn.Module) -> list[str]:
    """Names of the parameters and buffers (BatchNorm running statistics included) holding NaN or Inf."""
    return [name for name, tensor in module.state_dict().items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
