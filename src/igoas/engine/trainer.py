"""The training loop: `train(config) -> TrainResult`.

One code path for one CPU, one GPU and `torchrun` runs. Every step draws the occlusion
from a dedicated generator (seeded identically in every process, so all processes hide
the same region of their share of the batch, as one process would for the whole batch)
and passes the fractional epoch `epoch + i / iters_per_epoch` (epochs counted from 0, as
the authors' engine does) to the model, which drives the IGO schedule.

Checkpoints (`checkpoints/last.pth`, atomically replaced) hold everything needed to
continue exactly: model, optimiser, scheduler, grad scaler, sampler position, every RNG
state and the occlusion state. `train(resume=RUN_DIR)` continues from there, mid-epoch
included. A non-finite loss stops the run before the bad step touches the weights or the
checkpoint.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from igoas.config import RunConfig, apply_overrides, config_from_dict, load_config, model_arguments, to_dict, validate
from igoas.artifacts.checkpoint import checkpoint_payload, load_checkpoint, load_model_state, save_checkpoint
from igoas.artifacts.preprocess import Preprocess
from igoas.artifacts.run_dir import RunDir, claim_run_folder
from igoas.fileio import atomic_write, write_json
from igoas.engine.distributed import (DistributedContext, any_across, average_across, barrier,
                                      convert_sync_batchnorm, gather_objects, init_distributed, shutdown, unwrap,
                                      wrap_model)
from igoas.engine.embedding import Runtime
from igoas.engine.features import eval_datasets, evaluate_datasets, percent_summary, results_document
from igoas.engine.optim import build_optimizer, build_scheduler, open_layers
from igoas.engine.replicas import check_replicas, replica_generators, replicated_forward
from igoas.engine.resume import (changed_settings, check_position, nonfinite_tensors, optimiser_settings,
                                 reapply_settings, sync_learning_rates)
from igoas.engine.rng import (capture_rng_state, restore_rng_state, seed_everything, seed_for, state_for_rank,
                              use_deterministic_kernels)
from igoas.engine.run_log import RunLogger, truncate_jsonl
from igoas.data import build_dataset, build_train_loader, build_transforms
from igoas.data.check import ensure_trainable
from igoas.errors import CheckpointError, ConfigError, IgoasError
from igoas.losses import LossConfig, compute_losses
from igoas.model import build_model
from igoas.model.osm import mask_activity
from igoas.speed import autocast, grad_scaler, resolve_precision, set_tf32, to_memory_format

class TrainingDiverged(IgoasError):
    """The loss became NaN or infinite; the run stopped without saving the bad state."""


@dataclass
class TrainResult:
    """Where a run stands when `train` returns.

    `metrics` is the last evaluation (query set -> R1/R5/R10/mAP/mINP in percent), `best`
    the evaluation with the highest mAP on the main query set; `finished` is False when the
    run stopped early on `train.stop_after_iters` (continue it with `resume`);
    `train_seconds` the wall-clock time of training, summed over resumes.
    """

    run_dir: Path
    epoch: int
    iteration: int
    finished: bool
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0

    @property
    def last_checkpoint(self) -> Path:
        return RunDir(self.run_dir).last_checkpoint

    @property
    def best_checkpoint(self) -> Path | None:
        path = RunDir(self.run_dir).best_checkpoint
        return path if path.is_file() else None


def train(config: DictConfig | RunConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
          resume: str | os.PathLike[str] | None = None, overrides: list[str] | tuple[str, ...] = (),
          overwrite: bool = False) -> TrainResult:
    """Train a model as `config` describes (a config object, a plain dict, a YAML path or
    a preset name), or continue the run in `resume` (a run directory) from its last
    checkpoint, with its saved config unless `config` is given. `overrides` are dotted
    `key=value` strings applied last; on resume they take effect or are refused by name
    (`igoas.engine.resume`). A fresh run refuses a non-empty folder unless `overwrite`,
    and a folder another live run holds is refused either way (`igoas.engine.run_folder`)."""
    payload = None
    if resume is not None:
        last = RunDir(resume).last_checkpoint
        payload = load_checkpoint(last)
        if config is None:
            config = _saved_config(payload, last)
    cfg = apply_overrides(_as_config(config), overrides)
    changes: list[str] = []
    if resume is None:
        # The saved config must name the same data from any folder that later evaluates or resumes it.
        cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    else:
        cfg.train.output_dir = str(resume)
        # The stop that ended the interrupted run is behind us; a later one still applies.
        if cfg.train.stop_after_iters is not None and cfg.train.stop_after_iters <= _saved_iteration(payload, resume):
            cfg.train.stop_after_iters = None
        if isinstance(payload.get("config"), Mapping):
            # against the saved config completed with today's defaults: keys added since are no change
            saved = to_dict(config_from_dict(dict(payload["config"]), str(RunDir(resume).last_checkpoint)))
            changes = changed_settings(saved, to_dict(cfg), str(resume))
    validate(cfg)
    joined_before = torch.distributed.is_available() and torch.distributed.is_initialized()
    ctx = init_distributed(cfg.train.device)
    try:
        with claim_run_folder(cfg.train.output_dir, resume=resume is not None, overwrite=overwrite,
                              enabled=ctx.is_main) as cleaned:
            return _Run(cfg, ctx, payload, [f"resume: {change}" for change in changes] + cleaned).run()
    finally:
        if not joined_before:  # a process group the caller set up stays theirs
            shutdown(ctx)


def evaluation_due(epoch: int, epochs: int, every: int, also_every: int = 0) -> bool:
    """Whether the run evaluates after `epoch` (counted from 1): every `every` and every
    `also_every` epochs (0: never), and after the last one."""
    return epoch == epochs or any(step > 0 and epoch % step == 0 for step in (every, also_every))


def set_cpu_threads(count: int | None) -> None:
    """Use `count` CPU compute threads (None: leave torch's choice)."""
    if count is not None:
        torch.set_num_threads(count)


def _as_config(config: Any) -> DictConfig:
    if config is None:
        raise ConfigError("train() needs a config (object, dict, YAML path or preset name) or a run to resume")
    if isinstance(config, DictConfig):
        # a checked deep copy: the run may adjust it (output_dir on resume) without
        # touching the caller's object
        return config_from_dict(to_dict(config), "config")
    if isinstance(config, RunConfig):
        return OmegaConf.structured(config)
    if isinstance(config, Mapping):
        return config_from_dict(dict(config), "config")
    return load_config(config)


def _saved_iteration(payload: Mapping[str, Any], resume: str | os.PathLike[str]) -> int:
    try:
        return int(payload["iteration"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{RunDir(resume).last_checkpoint}: its 'iteration' entry is missing or not a number; "
                              "the checkpoint is damaged") from None


def _saved_config(payload: Mapping[str, Any], source: Path) -> DictConfig:
    if not isinstance(payload.get("config"), Mapping):
        raise CheckpointError(f"{source}: holds no run config, so the run cannot be resumed from it")
    return config_from_dict(dict(payload["config"]), str(source))


class _Run:
    """The state of one training run: model, optimiser, data, logs, and the loop over them."""

    def __init__(self, cfg: DictConfig, ctx: DistributedContext, payload: dict[str, Any] | None,
                 notes: list[str] | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.train.output_dir)
        self.files = RunDir(self.run_dir)
        # Training runs at train.precision; evaluation takes the same runtime at eval.precision.
        self.runtime = Runtime.resolve(ctx.device, cfg.train.precision, cfg.train.channels_last, ctx)
        set_tf32(self.runtime.device, self.runtime.precision)  # backward passes follow the training precision too
        use_deterministic_kernels(cfg.train.deterministic)
        set_cpu_threads(cfg.train.cpu_threads)
        self.local_replicas = check_replicas(cfg.train.replicas, ctx.world_size)  # DataParallel replicas per process
        self.dataset = build_dataset(cfg.data.dataset, cfg.data.root, **to_dict(cfg.data.options))
        self.targets = eval_datasets(cfg, self.dataset)
        ensure_trainable(self.dataset, self.targets)
        self.loader = self._train_loader()
        self.iters_per_epoch = len(self.loader)
        # Every process initialises the same weights; a resumed run takes its weights from
        # the checkpoint, never from pretrained files.
        seed_everything(cfg.train.seed)
        self.model = self._build_model(pretrained=cfg.model.pretrained if payload is None else False)
        schedule_warning = unwrap(self.model).occlusion.schedule_warning(cfg.train.epochs)
        # Per-process streams (augmentation, anything global) differ by rank; the occlusion
        # generator is shared so every process hides the same region.
        seed_everything(seed_for(cfg.train.seed, ctx.rank))
        self.occlusion_generator = torch.Generator().manual_seed(cfg.train.seed)
        # Loss terms averaged over processes before they are combined (see compute_losses).
        self.reduce = partial(average_across, ctx=ctx) if ctx.enabled else None
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.train.epochs, self.iters_per_epoch)
        self.scaler = grad_scaler(self.runtime.device, self.runtime.precision)
        self.loss_config = LossConfig(**to_dict(cfg.loss))
        self.epoch, self.batch, self.iteration = 0, 0, 0
        self._seconds_before, self._started = 0.0, time.perf_counter()  # see train_seconds
        self.metrics: dict[str, dict[str, float]] = {}
        self.last_results: dict[str, Any] = {}
        self.best: dict[str, Any] = {}
        self._epoch_end_pending = False  # set by _restore for checkpoints of earlier versions
        restored = [f"resume: {note}" for note in self._restore(payload)] if payload is not None else []
        self._notes = restored + list(notes or []) + ([f"warning: {schedule_warning}"] if schedule_warning else [])
        self.log = RunLogger(self.run_dir, enabled=ctx.is_main, log_every=cfg.train.log_every,
                             tensorboard=cfg.train.tensorboard, progress_bar=cfg.train.progress_bar,
                             resume_step=self.iteration if payload is not None else None,
                             resume_text_bytes=payload.get("train_log_bytes") if payload is not None else None)
        if self._epoch_end_pending and ctx.is_main:
            # an evaluation of that epoch end logged by an earlier, interrupted resume runs again
            truncate_jsonl(self.files.metrics_log, lambda record: record.get("iteration", 0) < self.iteration)
        self._trainable_phase: str | None = None
        self._wrapped: nn.Module = self.model

    @property
    def ctx(self) -> DistributedContext:
        return self.runtime.ctx

    # ------------------------------------------------------------------ set-up
    def _train_loader(self) -> Any:
        data, ctx = self.cfg.data, self.ctx
        if data.batch_size % ctx.world_size:
            raise ConfigError(f"data.batch_size={data.batch_size} (the global batch) must divide evenly over "
                              f"{ctx.world_size} processes")
        # Deterministic runs load in this process: augmentation then draws from the RNG
        # stream the checkpoint saves, so a resumed run sees the very same images.
        workers = 0 if self.cfg.train.deterministic else data.num_workers
        transform = build_transforms(data.height, data.width, train=True, mean=list(data.mean), std=list(data.std),
                                     **to_dict(data.augment))
        return build_train_loader(self.dataset.train, data.batch_size // ctx.world_size, sampler=data.sampler,
                                  num_instances=data.num_instances, num_workers=workers,
                                  pin_memory=self.runtime.device.type == "cuda", seed=self.cfg.train.seed,
                                  rank=ctx.rank, world_size=ctx.world_size, drop_last=data.drop_last,
                                  transform=transform, on_error=data.on_error)

    def _build_model(self, pretrained: bool | str) -> nn.Module:
        cfg = self.cfg.model
        model = build_model(num_classes=self.dataset.num_train_pids, pretrained=pretrained, **model_arguments(cfg))
        if self.cfg.train.sync_batchnorm and self.cfg.train.replicas == 1:  # replicas normalise on their own
            model = convert_sync_batchnorm(model, self.ctx)
        model.to(self.runtime.device)
        return to_memory_format(model, self.runtime.channels_last)

    def _restore(self, payload: dict[str, Any]) -> list[str]:
        source = str(self.files.last_checkpoint)
        load_model_state(self.model, payload["model"], source)
        missing = [key for key in ("optimizer", "scheduler", "rng", "sampler") if payload.get(key) is None]
        if missing:
            raise CheckpointError(f"{source}: lacks {', '.join(missing)}, so training cannot continue exactly from "
                                  "it; it holds weights only (use it with `igoas eval` or as model.pretrained)")
        saved_world = int(payload.get("world_size", 1))
        position = check_position(payload, self.cfg.train.epochs, self.iters_per_epoch,
                                  saved_world == self.ctx.world_size, source)
        self.epoch, self.batch, self.iteration, self._epoch_end_pending = position
        fresh = optimiser_settings(self.optimizer)
        states = [("optimiser", self.optimizer, "optimizer"), ("scheduler", self.scheduler, "scheduler"),
                  ("sampler", self.loader.sampler, "sampler")]
        if payload.get("grad_scaler"):
            states.append(("grad scaler", self.scaler, "grad_scaler"))
        if payload.get("occlusion_state"):
            states.append(("occlusion", unwrap(self.model).occlusion, "occlusion_state"))
        for what, target, key in states:
            try:
                target.load_state_dict(payload[key])
            except (ValueError, KeyError, TypeError, IndexError, RuntimeError, AttributeError) as err:
                raise CheckpointError(f"{source}: its {what} state is damaged or does not fit this run ({err}); "
                                      "resume from another checkpoint or start a new run from its weights") from None
        reapply_settings(self.optimizer, self.scheduler, fresh)
        self.metrics = dict(payload.get("metrics") or {})
        self.best = dict(payload.get("best") or {})
        self._seconds_before = float(payload.get("train_seconds") or 0.0)  # 0: a checkpoint of an earlier version
        notes = self._reconcile_best() if self.ctx.is_main else []
        try:
            state, derive, rng_notes = state_for_rank(payload["rng"], payload.get("rng_by_rank"), saved_world,
                                                      self.ctx.rank, self.ctx.world_size)
            notes += rng_notes + restore_rng_state(state, {"occlusion": self.occlusion_generator})
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError, AttributeError) as err:
            raise CheckpointError(f"{source}: its random-number state is damaged ({err}); an exact resume is "
                                  "impossible: resume from another checkpoint or start a new run") from None
        if derive:
            seed_everything(seed_for(self.cfg.train.seed, self.ctx.rank, self.iteration))
        if saved_world != self.ctx.world_size:
            notes.append(f"checkpoint written by {saved_world} process(es), continuing with {self.ctx.world_size}: "
                         "the data order after this point differs from an uninterrupted run")
        reason = self.loader.sampler.restart_reason
        if reason and self.batch:  # the sampler starts the epoch afresh: the counts follow it
            notes.append(f"{reason}: {self._restart_epoch()}")
        if self._epoch_end_pending:
            notes.append(f"the checkpoint was saved after the last batch of epoch {self.epoch} but before that "
                         "epoch's end (evaluation when due, last.pth); those steps run first")
        if self.epoch >= self.cfg.train.epochs and not self._epoch_end_pending:
            where = (f"the run finished at epoch {self.epoch} of {self.cfg.train.epochs}: nothing is left to train "
                     f"(raise train.epochs to train on)")
        else:
            where = f"continuing from epoch {self.epoch + 1}, batch {self.batch}, iteration {self.iteration}"
        return [where] + notes

    def _reconcile_best(self) -> list[str]:
        """Make the best record describe best.pth. best.pth is written before last.pth, so a
        stop between the two leaves it holding an evaluation the checkpoint does not know of:
        best.pth's own record then becomes the best so far (the file is what the run hands
        over); a missing or unreadable best.pth clears the record, so the next evaluation
        writes it."""
        path = self.files.best_checkpoint
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
        return [f"{path} holds the evaluation of iteration {recorded['iteration']} (mAP {recorded['mAP']:.2f}) "
                f"while the checkpoint's best record is {before} (as a stop between the two saves leaves them): "
                "best.pth's record is the best so far"]

    def _restart_epoch(self) -> str:
        """Go back to the start of the interrupted epoch, as the sampler did (its saved
        position means nothing with another number of processes or training set); the
        updates it made stay."""
        done, self.batch = self.batch, 0
        self.iteration -= done
        self.scheduler.last_epoch = self.iteration
        sync_learning_rates(self.optimizer, self.scheduler)
        return f"epoch {self.epoch + 1} restarts from its first batch ({done} batches of it are run again)"

    # ------------------------------------------------------------------ the loop
    @property
    def train_seconds(self) -> float:
        """Wall-clock seconds of this run's training, over all the processes that trained it
        up to the checkpoint it resumed from (time after that checkpoint was trained again)."""
        return self._seconds_before + time.perf_counter() - self._started

    def run(self) -> TrainResult:
        cfg = self.cfg
        self._started = time.perf_counter()
        total = cfg.train.epochs * self.iters_per_epoch
        if self.ctx.is_main:
            atomic_write(self.files.config, lambda handle: handle.write(OmegaConf.to_yaml(cfg).encode()))
            self.log.info(f"run {self.run_dir}: {cfg.model.name} ({cfg.model.backbone}) on {cfg.data.dataset}, "
                          f"{len(self.dataset.train)} training images, {self.iters_per_epoch} iterations/epoch, "
                          f"{self.ctx.world_size} process(es) on {self.runtime.device}, "
                          f"precision {self.runtime.precision}")
            for note in self._notes:
                self.log.info(note)
        try:
            if self._epoch_end_pending:
                self._end_epoch()
            while self.epoch < cfg.train.epochs:
                if not self._train_epoch(total):
                    return self._stopped()
                self.epoch, self.batch = self.epoch + 1, 0
                self._end_epoch()
                if self._stop_reached() and self.epoch < cfg.train.epochs:
                    return self._stopped()
            self._write_final_metrics()
            return self._result(finished=True)
        finally:
            self.log.close()

    def _train_epoch(self, total: int) -> bool:
        """One epoch from `self.batch` on; False when the run stops within it (on
        `train.stop_after_iters` before the epoch's last batch; a stop on the last batch
        lets the epoch end first, evaluation and last.pth included)."""
        cfg = self.cfg
        self._set_trainable()
        self.loader.sampler.set_epoch(self.epoch)
        self.log.start_epoch(self.epoch, cfg.train.epochs, self.iters_per_epoch, self.batch)
        for batch in self.loader:
            if self._too_small(batch):
                self.batch += 1
                continue
            progress = self.epoch + self.batch / self.iters_per_epoch
            record = self._step(batch, progress)
            self.batch += 1
            self.iteration += 1
            self.log.step({"epoch": self.epoch + 1, "iteration": self.iteration, "batch": self.batch, **record},
                          len(batch["pid"]) * self.ctx.world_size, total)
            stop = self._stop_reached() and self.batch < self.iters_per_epoch
            if stop or self._checkpoint_due():
                self._save_last()
            if stop:
                self.log.end_epoch()
                return False
        self.log.end_epoch()
        return True

    def _too_small(self, batch: Mapping[str, Any]) -> bool:
        """True (and said in the log) for a batch that leaves a replica one image: training
        BatchNorm on a single image fails, which an epoch's last batch does with
        `data.drop_last=false` when one image is left over (or skipped corrupt images)."""
        replicas = self.cfg.train.replicas
        count = len(batch["pid"])
        if count >= 2 * replicas:
            return False
        self.log.info(f"epoch {self.epoch + 1}, batch {self.batch + 1}: {count} image(s) for {replicas} replica(s) "
                      "left out, since BatchNorm cannot train on a single image (the last batch of an epoch with "
                      "data.drop_last=false; set it true, or a batch size that divides the training set, to avoid it)")
        return True

    def _stop_reached(self) -> bool:
        stop = self.cfg.train.stop_after_iters
        return stop is not None and self.iteration >= stop

    def _stopped(self) -> TrainResult:
        self.log.info(f"stopped after {self.iteration} iterations (train.stop_after_iters); "
                      f"continue with: igoas train --resume {self.run_dir}")
        return self._result(finished=False)

    def _end_epoch(self) -> None:
        """The steps after every epoch, in this order: evaluation when due (which keeps
        best.pth), then last.pth, so a resumed run never repeats an evaluation."""
        if self._evaluation_due():
            self._evaluate()
        self._save_last()

    def _checkpoint_due(self) -> bool:
        """A mid-epoch last.pth every `train.checkpoint_every_iters` iterations (epoch ends save anyway)."""
        every = self.cfg.train.checkpoint_every_iters
        return bool(every) and self.iteration % every == 0 and self.batch < self.iters_per_epoch

    @property
    def fixbase_epochs(self) -> int:
        """`train.fixbase_epochs`, or 0 when `model.pretrained` is false: fixbase protects
        pretrained layers from the new layers' first gradients, and a random backbone frozen
        for those epochs would only learn nothing."""
        return self.cfg.train.fixbase_epochs if self.cfg.model.pretrained else 0

    def _set_trainable(self) -> None:
        """The fixbase step at each epoch start: fixbase epochs train only the new layers;
        DDP is rebuilt when that set changes."""
        fixbase = self.epoch < self.fixbase_epochs
        model = unwrap(self.model)
        model.train()
        names = self.cfg.train.fixbase_modules
        open_layers(model, (list(names) if names is not None else list(model.fixbase_modules)) if fixbase else None)
        phase = "fixbase" if fixbase else "all"
        if phase != self._trainable_phase:
            if fixbase:
                self.log.info(f"epochs 1-{self.fixbase_epochs}: training only "
                              f"{', '.join(names if names is not None else model.fixbase_modules)}")
            elif self._trainable_phase is None and self.epoch < self.cfg.train.fixbase_epochs:
                self.log.info(f"train.fixbase_epochs={self.cfg.train.fixbase_epochs} skipped: model.pretrained is "
                              "false, so no pretrained layer needs protecting; every layer trains from epoch 1")
            self._wrapped = wrap_model(model, self.ctx)
            self._trainable_phase = phase

    def _step(self, batch: Mapping[str, Any], progress: float) -> dict[str, Any]:
        images = to_memory_format(batch["image"].to(self.runtime.device, non_blocking=True), self.runtime.channels_last)
        labels = batch["pid"].to(self.runtime.device, non_blocking=True)
        with autocast(self.runtime.device, self.runtime.precision):
            output = self._forward(images, progress)
        losses = compute_losses(output, labels, self.loss_config, reduce=self.reduce)
        if any_across(not bool(torch.isfinite(losses.total)), self.ctx):
            self._diverged(losses, "loss")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses.total).backward()
        grad_norm = self._clip_and_check(losses)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        record: dict[str, Any] = {"lr": lr, "grad_norm": grad_norm, "loss": {"total": losses.total.item()}}
        record["loss"].update({name: value.item() for name, value in losses.terms.items()})
        if losses.id_weights is not None and losses.id_weights.numel() > 1:
            heads = [name.removeprefix("id_") for name in losses.terms if name.startswith("id_")]
            record["id_weights"] = dict(zip(heads, losses.id_weights.tolist()))
        record["igo_area_ratio"] = float(output.occlusion_ratio)
        if self.cfg.model.occlusion != "none":
            record.update(mask_activity(output.visible_mask))
        return record

    def _forward(self, images: torch.Tensor, progress: float) -> Any:
        """The training forward: one model over the (process's share of the) batch, or
        DataParallel's replicas (`train.replicas`, see igoas.engine.replicas)."""
        replicas = self.cfg.train.replicas
        if replicas == 1:
            return self._wrapped(images, progress, self.occlusion_generator)
        generators = replica_generators(self.occlusion_generator, replicas)
        local = self.local_replicas
        mine = generators[self.ctx.rank * local:(self.ctx.rank + 1) * local]
        return replicated_forward(self._wrapped, images, progress, mine)

    def _clip_and_check(self, losses: Any) -> float | None:
        """Clip the gradient norm if asked; stop on non-finite gradients, which would
        otherwise turn the weights (and the next checkpoint) into NaN. With fp16 loss
        scaling, overflowing steps are the scaler's to skip."""
        clip, scaling = self.cfg.optim.grad_clip, self.scaler.is_enabled()
        if clip is None and scaling:
            return None
        if scaling:
            self.scaler.unscale_(self.optimizer)
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        norm = float(torch.nn.utils.clip_grad_norm_(parameters, clip if clip is not None else float("inf")))
        if not scaling and not math.isfinite(norm):
            self._diverged(losses, "gradient norm", norm)
        return norm

    def _diverged(self, losses: Any, what: str, value: float | None = None) -> None:
        terms = ", ".join(f"{name} {term.item():.4g}" for name, term in losses.terms.items())
        last = self.files.last_checkpoint
        kept = (f"the last good checkpoint is {last}" if last.is_file()
                else "no checkpoint was written yet (set train.checkpoint_every_iters to save within epochs)")
        value = losses.total.item() if value is None else value
        message = (f"{what} became {value} at epoch {self.epoch + 1}, batch {self.batch + 1} "
                   f"(iteration {self.iteration + 1}; terms: {terms}); stopped before updating the weights, {kept}. "
                   "Lower optim.lr, set optim.grad_clip or use train.precision=fp32, then continue with "
                   f"`igoas train --resume {self.run_dir} optim.lr=...`")
        self.log.info(message)
        raise TrainingDiverged(message)

    # ------------------------------------------------------------------ evaluation
    def _evaluation_due(self) -> bool:
        return evaluation_due(self.epoch, self.cfg.train.epochs, self.cfg.eval.every, self.cfg.eval.also_every)

    def _evaluate(self) -> None:
        results = self._rank_query_sets()
        if not self.ctx.is_main:
            return
        self.last_results = results
        self.metrics = percent_summary(results)
        self.log.metrics(self.epoch, self.iteration, self.metrics)
        self._keep_best()

    def _rank_query_sets(self) -> dict[str, Any]:
        """The evaluation of the current weights (every process takes part)."""
        self._check_finite()
        # Evaluation must not move the training RNG streams (loaders draw seeds from them).
        with torch.random.fork_rng(devices=[]):
            runtime = replace(self.runtime, precision=resolve_precision(self.cfg.eval.precision, self.runtime.device))
            return evaluate_datasets(unwrap(self.model), self.targets, self.cfg.eval, self._preprocess(), runtime,
                                     progress=self.cfg.train.progress_bar)

    def _keep_best(self) -> None:
        """best.pth follows the highest mAP of the main query set (the first evaluated)."""
        main = next(iter(self.metrics))
        if not self.best or self.metrics[main]["mAP"] > self.best["mAP"]:
            self.best = {"epoch": self.epoch, "iteration": self.iteration, "query_set": main,
                         "mAP": self.metrics[main]["mAP"], "metrics": self.metrics}
            save_checkpoint(self.files.best_checkpoint, self._payload())
            self.log.info(f"new best {main} mAP {self.best['mAP']:.2f} at epoch {self.epoch}: {self.files.best_checkpoint}")

    # ------------------------------------------------------------------ checkpoints
    def _payload(self, rng: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The checkpoint: weights and progress, and with `rng` (every process's RNG state,
        by rank) the whole training state a resume needs."""
        model = unwrap(self.model)
        payload = checkpoint_payload(model, self._preprocess(), config=to_dict(self.cfg), epoch=self.epoch,
                                     iteration=self.iteration, metrics=self.metrics, batch=self.batch, best=self.best,
                                     train_seconds=self.train_seconds)
        if rng is not None:
            payload.update({
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "grad_scaler": self.scaler.state_dict(),
                "sampler": self.loader.sampler.state_dict(),
                "rng": rng[0],  # rank 0's, as single-process checkpoints hold
                "occlusion_state": model.occlusion.state_dict(),
                "world_size": self.ctx.world_size,
                "train_log_bytes": self.log.text_size(),
            })
            if len(rng) > 1:
                payload["rng_by_rank"] = rng
        return payload

    def _preprocess(self) -> Preprocess:
        return Preprocess.from_config(self.cfg)

    def _check_finite(self) -> None:
        """Stop before a checkpoint or evaluation when any weight or buffer holds NaN or Inf
        (BatchNorm running statistics overflow without any gradient doing so)."""
        bad = nonfinite_tensors(unwrap(self.model))
        if any_across(bool(bad), self.ctx):
            last = self.files.last_checkpoint
            kept = f"the last good checkpoint {last} is kept" if last.is_file() else "no checkpoint was written"
            message = (f"non-finite values in {len(bad)} weight/buffer tensor(s) ({', '.join(bad[:4])}"
                       f"{', ...' if len(bad) > 4 else ''}) {self._where()}, iteration {self.iteration}; "
                       f"nothing was saved, {kept}. Lower optim.lr or set optim.grad_clip, then continue with "
                       f"`igoas train --resume {self.run_dir} optim.lr=...`")
            self.log.info(message)
            raise TrainingDiverged(message)

    def _where(self) -> str:
        """The position as the logs print it (epochs counted from 1): within an epoch, or at its end."""
        return f"at epoch {self.epoch + 1}, batch {self.batch}" if self.batch else f"at the end of epoch {self.epoch}"

    def _save_last(self) -> None:
        self._check_finite()
        # each process draws from its own streams: all are saved, for each to continue its own
        rng = gather_objects(capture_rng_state({"occlusion": self.occlusion_generator}), self.ctx)
        if self.ctx.is_main:
            save_checkpoint(self.files.last_checkpoint, self._payload(rng))
        barrier(self.ctx)

    def _write_final_metrics(self) -> None:
        """metrics.json from the final evaluation. A resumed run whose last.pth is already the
        final one (killed before metrics.json was written) evaluates that checkpoint again,
        without logging the evaluation a second time."""
        if any_across(self.ctx.is_main and not self.last_results, self.ctx):
            self.log.info(f"evaluating the final weights again for {self.files.final_metrics}")
            self.last_results = self._rank_query_sets()
        if not self.ctx.is_main:
            return
        from igoas.provenance import evaluation_record

        summary = results_document(self.last_results, epoch=self.epoch, best=self.best,
                                   train_seconds=round(self.train_seconds, 1),
                                   **evaluation_record(self.cfg, self.files.last_checkpoint, self._preprocess().to_dict(),
                                                     self.targets))
        write_json(self.files.final_metrics, summary)

    def _result(self, finished: bool) -> TrainResult:
        return TrainResult(run_dir=self.run_dir, epoch=self.epoch, iteration=self.iteration, finished=finished,
                           metrics=self.metrics, best=self.best, train_seconds=self.train_seconds)
