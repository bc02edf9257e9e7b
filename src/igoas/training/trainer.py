"""The training loop: `train(config) -> TrainResult`.

`train` reads top to bottom: config (one checked copy) -> data -> model -> `TrainState`
(fresh, or resumed from `checkpoints/last.pth`) -> per epoch `train_one_epoch`, evaluation
and the `CheckpointSaver` -> final metrics. One code path for one CPU, one GPU and
`torchrun` runs. Every step draws the occlusion from a dedicated generator (seeded
identically in every process, so all processes hide the same region of their share of the
batch, as one process would for the whole batch) and passes the fractional epoch
`epoch + i / iters_per_epoch` (epochs counted from 0, as the authors' engine does) to the
model, which drives the IGO schedule.

What a checkpoint holds, and how a resume continues exactly from it (mid-epoch included),
is `igoas.training.state`'s. A non-finite loss stops the run before the bad step touches
the weights or the checkpoint.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from igoas.artifacts.checkpoint import load_checkpoint
from igoas.artifacts.provenance import evaluation_record
from igoas.artifacts.run_dir import RunDir, claim_run_folder
from igoas.compute.distributed import (
    DistributedContext,
    any_across,
    average_across,
    convert_sync_batchnorm,
    init_distributed,
    shutdown,
    unwrap,
    wrap_model,
)
from igoas.compute.runtime import Runtime
from igoas.compute.speed import (
    autocast,
    grad_scaler,
    resolve_precision,
    set_tf32,
    to_memory_format,
)
from igoas.config import (
    RunConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    model_arguments,
    to_dict,
    validate,
)
from igoas.data import build_dataset, build_train_loader, build_transforms
from igoas.data.base import ReIDDataset
from igoas.data.check import ensure_trainable
from igoas.evaluation.model_evaluation import (
    eval_datasets,
    evaluate_datasets,
    percent_summary,
    results_document,
)
from igoas.imaging.preprocess import Preprocess
from igoas.model import build_model
from igoas.model.losses import LossConfig, compute_losses
from igoas.model.osm import mask_activity
from igoas.training.optim import build_optimizer, build_scheduler, open_layers
from igoas.training.replicas import (
    check_replicas,
    replica_generators,
    replicated_forward,
)
from igoas.training.resume import changed_settings, nonfinite_tensors
from igoas.training.run_log import RunLogger, truncate_jsonl
from igoas.training.saver import CheckpointSaver
from igoas.training.state import (
    CenterState,
    ModelEma,
    TrainState,
    saved_config,
    saved_iteration,
    saved_log_size,
)
from igoas.utils.errors import ConfigError, IgoasError
from igoas.utils.fileio import atomic_write, write_json
from igoas.utils.seeding import seed_everything, seed_for, use_deterministic_kernels


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
    (`igoas.training.resume`). A fresh run refuses a non-empty folder unless `overwrite`,
    and a folder another live run holds is refused either way (`igoas.training.run_folder`)."""
    payload, saved, notes = None, None, []
    if resume is not None:
        last = RunDir(resume).last_checkpoint
        payload = load_checkpoint(last)
        saved = saved_config(payload, last) if config is None or isinstance(payload.get("config"), Mapping) else None
    cfg = _as_config(config if config is not None else saved, overrides)
    if resume is None:
        # The saved config must name the same data from any folder that later evaluates or resumes it.
        cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    else:
        cfg.train.output_dir = str(resume)
        # The stop that ended the interrupted run is behind us; a later one still applies.
        if cfg.train.stop_after_iters is not None and cfg.train.stop_after_iters <= saved_iteration(payload, last):
            cfg.train.stop_after_iters = None
        if saved is not None:
            # against the saved config completed with today's defaults: keys added since are no change
            notes = [f"resume: {change}" for change in changed_settings(to_dict(saved), to_dict(cfg), str(resume))]
    joined_before = torch.distributed.is_available() and torch.distributed.is_initialized()
    ctx = init_distributed(cfg.train.device)
    try:
        with claim_run_folder(cfg.train.output_dir, resume=resume is not None, overwrite=overwrite,
                              enabled=ctx.is_main) as cleaned:
            return _run(cfg, ctx, payload, notes + cleaned)
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


def _as_config(config: Any, overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """A typed deep copy of `config` with `overrides` merged, checked after the overrides
    (a plain mapping also as given, so that its errors name it): the run may adjust the
    copy (data.root, output_dir on resume) without touching the caller's object."""
    if config is None:
        raise ConfigError("train() needs a config (object, dict, YAML path or preset name) or a run to resume")
    if isinstance(config, (str, os.PathLike)):
        return load_config(config, overrides)
    if isinstance(config, RunConfig):
        typed = OmegaConf.structured(config)
    elif isinstance(config, DictConfig) and OmegaConf.get_type(config) is RunConfig:
        typed = copy.deepcopy(config)
    else:  # a plain mapping (or an untyped DictConfig) meets the schema here, its errors named "config"
        typed = config_from_dict(to_dict(config) if isinstance(config, DictConfig) else dict(config), "config")
    cfg = apply_overrides(typed, overrides)
    validate(cfg)
    return cfg


def _run(cfg: DictConfig, ctx: DistributedContext, payload: dict[str, Any] | None, notes: list[str]) -> TrainResult:
    """One run, top to bottom: runtime, data, model, state (fresh or resumed), the epochs, the final metrics."""
    files = RunDir(Path(cfg.train.output_dir))
    # Training runs at train.precision; evaluation takes the same runtime at eval.precision.
    runtime = Runtime.resolve(ctx.device, cfg.train.precision, cfg.train.channels_last, ctx)
    set_tf32(runtime.device, runtime.precision)  # backward passes follow the training precision too
    use_deterministic_kernels(cfg.train.deterministic)
    set_cpu_threads(cfg.train.cpu_threads)
    local_replicas = check_replicas(cfg.train.replicas, ctx.world_size)  # refused before any data is read

    dataset = build_dataset(cfg.data.dataset, cfg.data.root, **to_dict(cfg.data.options))
    targets = eval_datasets(cfg, dataset)
    ensure_trainable(dataset, targets)
    loader = _train_loader(cfg, dataset, runtime)
    iters_per_epoch = len(loader)  # before a resume moves the sampler into the epoch

    # Every process initialises the same weights; a resumed run takes its weights from the
    # checkpoint, never from pretrained files.
    seed_everything(cfg.train.seed)
    model = _build_model(cfg, dataset.num_train_pids, cfg.model.pretrained if payload is None else False, runtime)
    schedule_warning = unwrap(model).occlusion.schedule_warning(cfg.train.epochs)
    # Per-process streams (augmentation, anything global) differ by rank; the occlusion
    # generator is shared so every process hides the same region.
    seed_everything(seed_for(cfg.train.seed, ctx.rank))
    optimizer = build_optimizer(model, cfg.optim)
    state = TrainState(model=model, optimizer=optimizer, sampler=loader.sampler,
                       scheduler=build_scheduler(optimizer, cfg.optim, cfg.train.epochs, iters_per_epoch),
                       scaler=grad_scaler(runtime.device, runtime.precision),
                       occlusion_generator=torch.Generator().manual_seed(cfg.train.seed),
                       ema=ModelEma(unwrap(model), cfg.train.ema_decay) if cfg.train.ema_decay else None,
                       centers=_center_state(cfg, dataset.num_train_pids, unwrap(model).feature_dim, runtime))
    if payload is not None:
        restored = state.load_state_dict(payload, files, epochs=cfg.train.epochs, iters_per_epoch=iters_per_epoch,
                                         seed=cfg.train.seed, ctx=ctx)
        notes = [f"resume: {note}" for note in restored] + notes
    if schedule_warning:
        notes.append(f"warning: {schedule_warning}")

    log = RunLogger(files.root, enabled=ctx.is_main, log_every=cfg.train.log_every,
                    tensorboard=cfg.train.tensorboard, progress_bar=cfg.train.progress_bar,
                    resume_step=state.iteration if payload is not None else None,
                    resume_text_bytes=saved_log_size(payload) if payload is not None else None)
    if state.epoch_end_pending and ctx.is_main:
        # an evaluation of that epoch end logged by an earlier, interrupted resume runs again
        truncate_jsonl(files.metrics_log, lambda record: record.get("iteration", 0) < state.iteration)
    preprocess = Preprocess.from_config(cfg)
    saver = CheckpointSaver(files, to_dict(cfg), preprocess, ctx, log, recovery_every=cfg.train.checkpoint_every_iters,
                            iters_per_epoch=iters_per_epoch)
    settings = LoopSettings.from_config(cfg, iters_per_epoch, local_replicas)
    loss_fn = partial(compute_losses, config=LossConfig(**to_dict(cfg.loss)),
                      reduce=partial(average_across, ctx=ctx) if ctx.enabled else None,  # averaged before combined
                      centers=state.centers.module if state.centers is not None else None)
    trainable = _Trainable(cfg, ctx, log)
    evaluate = partial(_evaluate, cfg=cfg, targets=targets, preprocess=preprocess, runtime=runtime, log=log)
    last_results: dict[str, Any] = {}  # the last evaluation, for metrics.json

    def end_epoch() -> None:
        """The steps after every epoch, in this order: evaluation when due (which keeps
        best.pth), then last.pth, so a resumed run never repeats an evaluation."""
        nonlocal last_results
        if evaluation_due(state.epoch, cfg.train.epochs, cfg.eval.every, cfg.eval.also_every):
            results = evaluate(state)
            if ctx.is_main:
                last_results, state.metrics = results, percent_summary(results)
                log.metrics(state.epoch, state.iteration, state.metrics)
                saver.save_best(state)
        _check_finite(state, runtime.ctx, log, settings.run_dir)
        saver.save_last(state)

    if ctx.is_main:
        atomic_write(files.config, lambda handle: handle.write(OmegaConf.to_yaml(cfg).encode()))
        log.info(f"run {files.root}: {cfg.model.name} ({cfg.model.backbone}) on {cfg.data.dataset}, "
                 f"{len(dataset.train)} training images, {iters_per_epoch} iterations/epoch, "
                 f"{ctx.world_size} process(es) on {runtime.device}, precision {runtime.precision}")
        for note in notes:
            log.info(note)
    state.started = time.perf_counter()
    try:
        if state.epoch_end_pending:
            end_epoch()
        while state.epoch < cfg.train.epochs:
            network = trainable(state)
            if not train_one_epoch(state, loader, loss_fn, runtime, log, network=network, settings=settings,
                                   saver=saver):
                return _stopped(state, files, log)
            state.epoch, state.batch = state.epoch + 1, 0
            end_epoch()
            if settings.stop_reached(state) and state.epoch < cfg.train.epochs:
                return _stopped(state, files, log)
        # A resumed run whose last.pth is already the final one (killed before metrics.json
        # was written) evaluates that checkpoint again, without logging it a second time.
        if any_across(ctx.is_main and not last_results, ctx):
            log.info(f"evaluating the final weights again for {files.final_metrics}")
            last_results = evaluate(state)
        if ctx.is_main:
            write_json(files.final_metrics, results_document(
                last_results, epoch=state.epoch, best=state.best, train_seconds=round(state.train_seconds, 1),
                **evaluation_record(cfg, files.last_checkpoint, preprocess.to_dict(), targets)))
        return _result(state, files, finished=True)
    finally:
        log.close()


# ---------------------------------------------------------------------- set-up
def _train_loader(cfg: DictConfig, dataset: ReIDDataset, runtime: Runtime) -> DataLoader:
    data, ctx = cfg.data, runtime.ctx
    if data.batch_size % ctx.world_size:
        raise ConfigError(f"data.batch_size={data.batch_size} (the global batch) must divide evenly over "
                          f"{ctx.world_size} processes")
    # Deterministic runs load in this process: augmentation then draws from the RNG
    # stream the checkpoint saves, so a resumed run sees the very same images.
    workers = 0 if cfg.train.deterministic else data.num_workers
    transform = build_transforms(data.height, data.width, train=True, mean=list(data.mean), std=list(data.std),
                                 **to_dict(data.augment))
    return build_train_loader(dataset.train, data.batch_size // ctx.world_size, sampler=data.sampler,
                              num_instances=data.num_instances, num_workers=workers,
                              pin_memory=runtime.device.type == "cuda", seed=cfg.train.seed,
                              rank=ctx.rank, world_size=ctx.world_size, drop_last=data.drop_last,
                              transform=transform, on_error=data.on_error)


def _center_state(cfg: DictConfig, num_classes: int, feature_dim: int, runtime: Runtime) -> CenterState | None:
    """The center loss's centers (seeded from train.seed) and their own SGD, when on."""
    if not cfg.loss.center_weight:
        return None
    if runtime.ctx is not None and runtime.ctx.enabled:
        raise ConfigError("loss.center_weight > 0 trains on one process only: each process would move its own "
                          "copy of the centers; run on one process (with train.replicas for several GPUs) or set "
                          "loss.center_weight=0")
    return CenterState(num_classes, feature_dim, cfg.loss.center_weight, cfg.optim.center_lr, cfg.train.seed,
                       runtime.device)


def _build_model(cfg: DictConfig, num_classes: int, pretrained: bool | str, runtime: Runtime) -> nn.Module:
    model = build_model(num_classes=num_classes, pretrained=pretrained, **model_arguments(cfg.model))
    if cfg.train.sync_batchnorm and cfg.train.replicas == 1:  # replicas normalise on their own
        model = convert_sync_batchnorm(model, runtime.ctx)
    model.to(runtime.device)
    return to_memory_format(model, runtime.channels_last)


class _Trainable:
    """The fixbase step at each epoch start: fixbase epochs train only the new layers (only
    with `model.pretrained`: a random backbone frozen for those epochs would learn nothing);
    the network is wrapped for the processes again (DDP) when that set changes."""

    def __init__(self, cfg: DictConfig, ctx: DistributedContext, log: RunLogger) -> None:
        self.cfg, self.ctx, self.log = cfg, ctx, log
        self.fixbase_epochs = cfg.train.fixbase_epochs if cfg.model.pretrained else 0
        self.phase: str | None = None
        self.network: nn.Module | None = None

    def __call__(self, state: TrainState) -> nn.Module:
        """The network to train epoch `state.epoch` with, in training mode."""
        fixbase = state.epoch < self.fixbase_epochs
        model = unwrap(state.model)
        model.train()
        names = self.cfg.train.fixbase_modules
        open_layers(model, (list(names) if names is not None else list(model.fixbase_modules)) if fixbase else None)
        phase = "fixbase" if fixbase else "all"
        if phase != self.phase or self.network is None:  # always on the first call
            if fixbase:
                self.log.info(f"epochs 1-{self.fixbase_epochs}: training only "
                              f"{', '.join(names if names is not None else model.fixbase_modules)}")
            elif self.phase is None and state.epoch < self.cfg.train.fixbase_epochs:
                self.log.info(f"train.fixbase_epochs={self.cfg.train.fixbase_epochs} skipped: model.pretrained is "
                              "false, so no pretrained layer needs protecting; every layer trains from epoch 1")
            self.network = wrap_model(model, self.ctx)
            self.phase = phase
        return self.network


@dataclass(frozen=True)
class LoopSettings:
    """What the loop reads besides the state, fixed for a run by its config and data."""

    iters_per_epoch: int
    epochs: int
    replicas: int  # DataParallel replicas in all (train.replicas)
    local_replicas: int  # of them in this process
    grad_clip: float | None
    stop_after_iters: int | None
    occluding: bool  # the model occludes: log the mask activity
    run_dir: Path

    @classmethod
    def from_config(cls, cfg: DictConfig, iters_per_epoch: int, local_replicas: int) -> LoopSettings:
        return cls(iters_per_epoch, cfg.train.epochs, cfg.train.replicas, local_replicas, cfg.optim.grad_clip,
                   cfg.train.stop_after_iters, cfg.model.occlusion != "none", Path(cfg.train.output_dir))

    def stop_reached(self, state: TrainState) -> bool:
        return self.stop_after_iters is not None and state.iteration >= self.stop_after_iters


# ---------------------------------------------------------------------- the loop
def train_one_epoch(state: TrainState, loader: DataLoader, loss_fn: Callable[..., Any], runtime: Runtime, log: RunLogger, *,
                    network: nn.Module, settings: LoopSettings, saver: CheckpointSaver) -> bool:
    """Epoch `state.epoch` from batch `state.batch` on; False when the run stops within it
    (on `train.stop_after_iters` before the epoch's last batch; a stop on the last batch
    lets the epoch end first, evaluation and last.pth included). Saves the recovery
    last.pth every `train.checkpoint_every_iters` iterations."""
    loader.sampler.set_epoch(state.epoch)
    log.start_epoch(state.epoch, settings.epochs, settings.iters_per_epoch, state.batch)
    for batch in loader:
        if _too_small(batch, state, settings, log):
            state.batch += 1
            continue
        record = train_step(state, network, batch, loss_fn, runtime, settings, log)
        log.step({"epoch": state.epoch + 1, "iteration": state.iteration, "batch": state.batch, **record},
                 len(batch["pid"]) * runtime.ctx.world_size, settings.epochs * settings.iters_per_epoch)
        stop = settings.stop_reached(state) and state.batch < settings.iters_per_epoch
        if stop or saver.recovery_due(state):
            _check_finite(state, runtime.ctx, log, settings.run_dir)
            saver.save_last(state)
        if stop:
            log.end_epoch()
            return False
    log.end_epoch()
    return True


def train_step(state: TrainState, network: nn.Module, batch: Mapping[str, Any], loss_fn: Callable[..., Any],
               runtime: Runtime, settings: LoopSettings, log: RunLogger) -> dict[str, Any]:
    """One optimiser step on `batch` at the fractional epoch `epoch + batch / iters_per_epoch`
    (which drives the IGO schedule); returns the log record."""
    progress = state.epoch + state.batch / settings.iters_per_epoch
    images = to_memory_format(batch["image"].to(runtime.device, non_blocking=True), runtime.channels_last)
    labels = batch["pid"].to(runtime.device, non_blocking=True)
    with autocast(runtime.device, runtime.precision):
        output = _forward(network, images, progress, state.occlusion_generator, settings, runtime.ctx)
    losses = loss_fn(output, labels)
    if any_across(not bool(torch.isfinite(losses.total)), runtime.ctx):
        _diverged(state, losses, "loss", settings, log)
    state.optimizer.zero_grad(set_to_none=True)
    if state.centers is not None:
        state.centers.zero_grad()
    state.scaler.scale(losses.total).backward()
    grad_norm = _clip_and_check(state, losses, settings, log)
    state.scaler.step(state.optimizer)
    if state.centers is not None:  # after the network's step, as BoT's engine
        state.centers.step(state.scaler.get_scale() if state.scaler.is_enabled() else 1.0)
    state.scaler.update()
    lr = state.optimizer.param_groups[0]["lr"]
    state.scheduler.step()
    state.after_step()
    record: dict[str, Any] = {"lr": lr, "grad_norm": grad_norm, "loss": {"total": losses.total.item()}}
    record["loss"].update({name: value.item() for name, value in losses.terms.items()})
    if losses.id_weights is not None and losses.id_weights.numel() > 1:
        heads = [name.removeprefix("id_") for name in losses.terms if name.startswith("id_")]
        record["id_weights"] = dict(zip(heads, losses.id_weights.tolist()))
    record["occluded_fraction"] = float(output.occluded_fraction)
    if settings.occluding:
        record.update(mask_activity(output.visible_mask))
    return record


def _forward(network: nn.Module, images: torch.Tensor, progress: float, occlusion: torch.Generator,
             settings: LoopSettings, ctx: DistributedContext) -> Any:
    """The training forward: one model over the (process's share of the) batch, or
    DataParallel's replicas (`train.replicas`, see igoas.training.replicas)."""
    if settings.replicas == 1:
        return network(images, progress, occlusion)
    local = settings.local_replicas
    mine = replica_generators(occlusion, settings.replicas)[ctx.rank * local:(ctx.rank + 1) * local]
    return replicated_forward(network, images, progress, mine)


def _clip_and_check(state: TrainState, losses: Any, settings: LoopSettings, log: RunLogger) -> float | None:
    """Clip the gradient norm if asked; stop on non-finite gradients, which would
    otherwise turn the weights (and the next checkpoint) into NaN. With fp16 loss
    scaling, overflowing steps are the scaler's to skip."""
    clip, scaling = settings.grad_clip, state.scaler.is_enabled()
    if clip is None and scaling:
        return None
    if scaling:
        state.scaler.unscale_(state.optimizer)
    parameters = [p for p in state.model.parameters() if p.grad is not None]
    norm = float(torch.nn.utils.clip_grad_norm_(parameters, clip if clip is not None else float("inf")))
    if not scaling and not math.isfinite(norm):
        _diverged(state, losses, "gradient norm", settings, log, norm)
    return norm


def _too_small(batch: Mapping[str, Any], state: TrainState, settings: LoopSettings, log: RunLogger) -> bool:
    """True (and said in the log) for a batch that leaves a replica one image: training
    BatchNorm on a single image fails, which an epoch's last batch does with
    `data.drop_last=false` when one image is left over (or skipped corrupt images)."""
    count = len(batch["pid"])
    if count >= 2 * settings.replicas:
        return False
    log.info(f"epoch {state.epoch + 1}, batch {state.batch + 1}: {count} image(s) for {settings.replicas} "
             "replica(s) left out, since BatchNorm cannot train on a single image (the last batch of an epoch with "
             "data.drop_last=false; set it true, or a batch size that divides the training set, to avoid it)")
    return True


def _diverged(state: TrainState, losses: Any, what: str, settings: LoopSettings, log: RunLogger,
              value: float | None = None) -> None:
    terms = ", ".join(f"{name} {term.item():.4g}" for name, term in losses.terms.items())
    last = RunDir(settings.run_dir).last_checkpoint
    kept = (f"the last good checkpoint is {last}" if last.is_file()
            else "no checkpoint was written yet (set train.checkpoint_every_iters to save within epochs)")
    value = losses.total.item() if value is None else value
    message = (f"{what} became {value} at epoch {state.epoch + 1}, batch {state.batch + 1} "
               f"(iteration {state.iteration + 1}; terms: {terms}); stopped before updating the weights, {kept}. "
               "Lower optim.lr, set optim.grad_clip or use train.precision=fp32, then continue with "
               f"`igoas train --resume {settings.run_dir} optim.lr=...`")
    log.info(message)
    raise TrainingDiverged(message)


def _check_finite(state: TrainState, ctx: DistributedContext, log: RunLogger, run_dir: Path) -> None:
    """Stop before a checkpoint or evaluation when any weight or buffer holds NaN or Inf
    (BatchNorm running statistics overflow without any gradient doing so)."""
    bad = nonfinite_tensors(unwrap(state.model))
    if any_across(bool(bad), ctx):
        last = RunDir(run_dir).last_checkpoint
        kept = f"the last good checkpoint {last} is kept" if last.is_file() else "no checkpoint was written"
        # the position as the logs print it (epochs counted from 1): within an epoch, or at its end
        where = (f"at epoch {state.epoch + 1}, batch {state.batch}" if state.batch
                 else f"at the end of epoch {state.epoch}")
        message = (f"non-finite values in {len(bad)} weight/buffer tensor(s) ({', '.join(bad[:4])}"
                   f"{', ...' if len(bad) > 4 else ''}) {where}, iteration {state.iteration}; "
                   f"nothing was saved, {kept}. Lower optim.lr or set optim.grad_clip, then continue with "
                   f"`igoas train --resume {run_dir} optim.lr=...`")
        log.info(message)
        raise TrainingDiverged(message)


# ---------------------------------------------------------------------- evaluation and the end
def _evaluate(state: TrainState, *, cfg: DictConfig, targets: Any, preprocess: Preprocess, runtime: Runtime,
              log: RunLogger) -> dict[str, Any]:
    """The evaluation of the deployed weights (the EMA when on; every process takes part)."""
    _check_finite(state, runtime.ctx, log, Path(cfg.train.output_dir))
    # Evaluation must not move the training RNG streams (loaders draw seeds from them).
    with torch.random.fork_rng(devices=[]):
        evaluation = replace(runtime, precision=resolve_precision(cfg.eval.precision, runtime.device))
        return evaluate_datasets(state.deployed, targets, cfg.eval, preprocess, evaluation,
                                 progress=cfg.train.progress_bar)


def _stopped(state: TrainState, files: RunDir, log: RunLogger) -> TrainResult:
    log.info(f"stopped after {state.iteration} iterations (train.stop_after_iters); "
             f"continue with: igoas train --resume {files.root}")
    return _result(state, files, finished=False)


def _result(state: TrainState, files: RunDir, finished: bool) -> TrainResult:
    return TrainResult(run_dir=files.root, epoch=state.epoch, iteration=state.iteration, finished=finished,
                       metrics=state.metrics, best=state.best, train_seconds=state.train_seconds)
