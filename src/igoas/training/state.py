"""`TrainState`: what a resumed run needs, and the one place that knows what a checkpoint holds.

A run's resumable state is its model (and the EMA of its weights, `train.ema_decay`),
optimiser, scheduler, grad scaler, sampler position, occlusion state, random streams,
counters and records. `TrainState.state_dict` writes it as the checkpoint payload
(`igoas.artifacts.checkpoint` reads the weights of the same file) and
`TrainState.load_state_dict` puts it back, refusing by name a checkpoint that cannot
continue the run exactly.

With the EMA on, the checkpoint's `model` entry holds the averaged weights (what
`igoas eval`, `best.pth` and deployment use) and `train_model` the raw weights training
continues from.

With the center loss on (`loss.center_weight`), the checkpoint's `center_loss` entry holds
the class centers and their optimiser.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import torch
from omegaconf import DictConfig
from torch import nn

from igoas.artifacts.checkpoint import checkpoint_payload, load_checkpoint, load_model_state
from igoas.artifacts.run_dir import RunDir
from igoas.compute.distributed import DistributedContext, unwrap
from igoas.config import config_from_dict
from igoas.imaging.preprocess import Preprocess
from igoas.model.losses import CenterLoss
from igoas.training.resume import optimiser_settings, reapply_settings, sync_learning_rates
from igoas.training.rng import capture_rng_state, restore_rng_state, state_for_rank
from igoas.utils.errors import CheckpointError
from igoas.utils.seeding import seed_everything, seed_for

# What a state's load_state_dict may raise on a damaged or misfitting entry.
_DAMAGE = (ValueError, KeyError, TypeError, IndexError, RuntimeError, AttributeError)


class ModelEma:
    """An exponential moving average of a model's weights (timm's ModelEmaV3 pattern):
    parameters averaged with `decay` after every optimiser step, buffers (BatchNorm
    statistics) copied, since an average of running statistics describes no weights."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for average, current in zip(self.module.parameters(), model.parameters()):
            average.lerp_(current, 1.0 - self.decay)
        for kept, current in zip(self.module.buffers(), model.buffers()):
            kept.copy_(current)


class CenterState:
    """The center loss's centers and BoT's separate update of them (engine/trainer.py,
    solver/build.py): after the network's step, the center gradient is divided by the
    loss weight (so the step follows the unweighted center loss) and plain SGD at `lr`
    (no momentum, no weight decay, no schedule) moves the centers."""

    def __init__(self, num_classes: int, feature_dim: int, weight: float, lr: float, seed: int,
                 device: torch.device | str = "cpu") -> None:
        self.module = CenterLoss(num_classes, feature_dim, torch.Generator().manual_seed(seed)).to(device)
        self.optimizer = torch.optim.SGD(self.module.parameters(), lr=lr)
        self.weight = weight

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def step(self, loss_scale: float = 1.0) -> None:
        """One center update; `loss_scale` undoes a grad scaler's factor (fp16). A step
        whose gradient overflowed (the scaler skips the network's too) leaves the centers."""
        grad = self.module.centers.grad
        if grad is None:
            return
        grad.mul_(1.0 / (self.weight * loss_scale))
        if torch.isfinite(grad).all():
            self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {"centers": self.module.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["centers"])
        self.optimizer.load_state_dict(state["optimizer"])


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


def saved_config(payload: Mapping[str, Any], source: Path) -> DictConfig:
    """The run config a checkpoint holds, checked and completed with today's defaults."""
    if not isinstance(payload.get("config"), Mapping):
        raise CheckpointError(f"{source}: holds no run config, so the run cannot be resumed from it")
    return config_from_dict(dict(payload["config"]), str(source))


def saved_iteration(payload: Mapping[str, Any], source: Path) -> int:
    """The iteration a checkpoint was written at."""
    try:
        return int(payload["iteration"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{source}: its 'iteration' entry is missing or not a number; "
                              "the checkpoint is damaged") from None


def saved_log_size(payload: Mapping[str, Any]) -> int | None:
    """The size train.log had when the checkpoint was written (None: an earlier version's checkpoint)."""
    return payload.get("train_log_bytes")


@dataclass
class TrainState:
    """Everything a resumed run continues from: one `state_dict`, one `load_state_dict`.

    `epoch` counts finished epochs, `batch` the batches of the current one, `iteration`
    optimiser steps (skipped batches included); `metrics` is the last evaluation, `best`
    the record of best.pth."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    sampler: Any
    occlusion_generator: torch.Generator
    ema: ModelEma | None = None
    centers: CenterState | None = None
    epoch: int = 0
    batch: int = 0
    iteration: int = 0
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    seconds_before: float = 0.0  # training time up to the checkpoint this run resumed from
    started: float = field(default_factory=time.perf_counter)
    epoch_end_pending: bool = False  # set by load_state_dict for checkpoints of earlier versions

    @property
    def train_seconds(self) -> float:
        """Wall-clock seconds of this run's training, over all the processes that trained it
        up to the checkpoint it resumed from (time after that checkpoint was trained again)."""
        return self.seconds_before + time.perf_counter() - self.started

    @property
    def deployed(self) -> nn.Module:
        """The weights evaluated and saved as the checkpoints' `model`: the EMA when on."""
        return self.ema.module if self.ema is not None else unwrap(self.model)

    def after_step(self) -> None:
        """Count an optimiser step (the EMA follows it)."""
        if self.ema is not None:
            self.ema.update(unwrap(self.model))
        self.batch += 1
        self.iteration += 1

    def rng_state(self) -> dict[str, Any]:
        """This process's random streams, as `state_dict` takes them (gathered by rank)."""
        return capture_rng_state({"occlusion": self.occlusion_generator})

    def state_dict(self, config: Mapping[str, Any], preprocess: Preprocess, rng: list[dict[str, Any]] | None = None,
                   log_size: int | None = None) -> dict[str, Any]:
        """The checkpoint payload: weights, progress and records; with `rng` (every
        process's `rng_state`, by rank) the whole training state a resume needs, and the
        size of train.log at that point."""
        payload = checkpoint_payload(self.deployed, preprocess, config=config, epoch=self.epoch,
                                     iteration=self.iteration, metrics=self.metrics, batch=self.batch, best=self.best,
                                     train_seconds=self.train_seconds)
        if rng is None:
            return payload
        payload.update({
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng[0],  # rank 0's, as single-process checkpoints hold
            "occlusion_state": unwrap(self.model).occlusion.state_dict(),
            "world_size": len(rng),
            "train_log_bytes": log_size,
        })
        if len(rng) > 1:
            payload["rng_by_rank"] = rng
        if self.ema is not None:
            payload["train_model"] = unwrap(self.model).state_dict()
        if self.centers is not None:
            payload["center_loss"] = self.centers.state_dict()
        return payload

    def load_state_dict(self, payload: Mapping[str, Any], files: RunDir, *, epochs: int, iters_per_epoch: int,
                        seed: int, ctx: DistributedContext) -> list[str]:
        """Continue from `payload` (the run's last.pth); returns notes for the log. Refuses a
        checkpoint without the training state or one that does not fit this run."""
        where = str(files.last_checkpoint)
        load_model_state(unwrap(self.model), payload["train_model" if "train_model" in payload else "model"], where)
        needed = (["optimizer", "scheduler", "rng", "sampler"] + (["train_model"] if self.ema is not None else [])
                  + (["center_loss"] if self.centers is not None else []))
        missing = [key for key in needed if payload.get(key) is None]
        if missing:
            raise CheckpointError(f"{where}: lacks {', '.join(missing)}, so training cannot continue exactly from "
                                  "it; it holds weights only (use it with `igoas eval` or as model.pretrained)")
        if self.ema is not None:
            load_model_state(self.ema.module, payload["model"], where)
        saved_world = int(payload.get("world_size", 1))
        position = check_position(payload, epochs, iters_per_epoch, saved_world == ctx.world_size, where)
        self.epoch, self.batch, self.iteration, self.epoch_end_pending = position
        fresh = optimiser_settings(self.optimizer)
        states = [("optimiser", self.optimizer, "optimizer"), ("scheduler", self.scheduler, "scheduler"),
                  ("sampler", self.sampler, "sampler")]
        if payload.get("grad_scaler"):
            states.append(("grad scaler", self.scaler, "grad_scaler"))
        if payload.get("occlusion_state"):
            states.append(("occlusion", unwrap(self.model).occlusion, "occlusion_state"))
        if self.centers is not None:
            states.append(("center loss", self.centers, "center_loss"))
        for what, target, key in states:
            try:
                target.load_state_dict(payload[key])
            except _DAMAGE as err:
                raise CheckpointError(f"{where}: its {what} state is damaged or does not fit this run ({err}); "
                                      "resume from another checkpoint or start a new run from its weights") from None
        reapply_settings(self.optimizer, self.scheduler, fresh)
        self.metrics = dict(payload.get("metrics") or {})
        self.best = dict(payload.get("best") or {})
        self.seconds_before = float(payload.get("train_seconds") or 0.0)  # 0: a checkpoint of an earlier version
        notes = self._reconcile_best(files.best_checkpoint) if ctx.is_main else []
        try:
            state, derive, rng_notes = state_for_rank(payload["rng"], payload.get("rng_by_rank"), saved_world,
                                                      ctx.rank, ctx.world_size)
            notes += rng_notes + restore_rng_state(state, {"occlusion": self.occlusion_generator})
        except _DAMAGE as err:
            raise CheckpointError(f"{where}: its random-number state is damaged ({err}); an exact resume is "
                                  "impossible: resume from another checkpoint or start a new run") from None
        if derive:
            seed_everything(seed_for(seed, ctx.rank, self.iteration))
        if saved_world != ctx.world_size:
            notes.append(f"checkpoint written by {saved_world} process(es), continuing with {ctx.world_size}: "
                         "the data order after this point differs from an uninterrupted run")
        reason = self.sampler.restart_reason
        if reason and self.batch:  # the sampler starts the epoch afresh: the counts follow it
            notes.append(f"{reason}: {self._restart_epoch()}")
        if self.epoch_end_pending:
            notes.append(f"the checkpoint was saved after the last batch of epoch {self.epoch} but before that "
                         "epoch's end (evaluation when due, last.pth); those steps run first")
        if self.epoch >= epochs and not self.epoch_end_pending:
            position_note = (f"the run finished at epoch {self.epoch} of {epochs}: nothing is left to train "
                             f"(raise train.epochs to train on)")
        else:
            position_note = f"continuing from epoch {self.epoch + 1}, batch {self.batch}, iteration {self.iteration}"
        return [position_note] + notes

    def _reconcile_best(self, path: Path) -> list[str]:
        """Make the best record describe best.pth. best.pth is written before last.pth, so a
        stop between the two leaves it holding an evaluation the checkpoint does not know of:
        best.pth's own record then becomes the best so far (the file is what the run hands
        over); a missing or unreadable best.pth clears the record, so the next evaluation
        writes it."""
        if not path.is_file():
            if not self.best:
                return []
            self.best = {}
            return [f"{path} is missing; the next evaluation writes it"]
        try:
            recorded = dict(load_checkpoint(path).get("best") or {})
        except CheckpointError as err:
            self.best = {}
            return [f"{err}; the next evaluation replaces it"]
        if recorded.get("iteration") == self.best.get("iteration"):
            return []
        before = (f"iteration {self.best['iteration']}, mAP {self.best['mAP']:.2f}" if self.best else "none")
        self.best = recorded
        if not recorded:
            return [f"{path} holds no best record; the next evaluation replaces it"]
        return [(f"{path} holds the evaluation of iteration {recorded['iteration']} (mAP {recorded['mAP']:.2f}) "
                 f"while the checkpoint's best record is {before} (as a stop between the two saves leaves them): "
                 "best.pth's record is the best so far")]

    def _restart_epoch(self) -> str:
        """Go back to the start of the interrupted epoch, as the sampler did (its saved
        position means nothing with another number of processes or training set); the
        updates it made stay."""
        done, self.batch = self.batch, 0
        self.iteration -= done
        self.scheduler.last_epoch = self.iteration
        sync_learning_rates(self.optimizer, self.scheduler)
        return f"epoch {self.epoch + 1} restarts from its first batch ({done} batches of it are run again)"
