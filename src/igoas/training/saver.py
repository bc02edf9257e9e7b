"""`CheckpointSaver`: where and when a run's checkpoints are written (timm's CheckpointSaver role).

`checkpoints/last.pth` holds the whole training state: written at every epoch end and, as
a recovery point, every `train.checkpoint_every_iters` iterations within epochs (both
replace the same file, atomically). `checkpoints/best.pth` holds the weights and records
of the evaluation with the highest mAP on the main query set, for use rather than resume.
What a checkpoint holds is `TrainState.state_dict`'s to say.
"""
from __future__ import annotations

from typing import Any, Mapping

from igoas.artifacts.checkpoint import save_checkpoint
from igoas.artifacts.run_dir import RunDir
from igoas.compute.distributed import DistributedContext, barrier, gather_objects
from igoas.imaging.preprocess import Preprocess
from igoas.training.run_log import RunLogger
from igoas.training.state import TrainState


class CheckpointSaver:
    """Writes last.pth (epoch ends and recovery points) and best.pth for one run; only the
    main process writes, every process takes part in gathering the random streams."""

    def __init__(self, files: RunDir, config: Mapping[str, Any], preprocess: Preprocess, ctx: DistributedContext,
                 log: RunLogger, recovery_every: int, iters_per_epoch: int) -> None:
        self.files = files
        self.config = config
        self.preprocess = preprocess
        self.ctx = ctx
        self.log = log
        self.recovery_every = recovery_every
        self.iters_per_epoch = iters_per_epoch

    def recovery_due(self, state: TrainState) -> bool:
        """A mid-epoch last.pth every `train.checkpoint_every_iters` iterations (epoch ends save anyway)."""
        every = self.recovery_every
        return bool(every) and state.iteration % every == 0 and state.batch < self.iters_per_epoch

    def save_last(self, state: TrainState) -> None:
        """last.pth with every process's random streams (each process continues its own)."""
        rng = gather_objects(state.rng_state(), self.ctx)
        if self.ctx.is_main:
            save_checkpoint(self.files.last_checkpoint,
                            state.state_dict(self.config, self.preprocess, rng, self.log.text_size()))
        barrier(self.ctx)

    def save_best(self, state: TrainState) -> None:
        """best.pth when the state's last evaluation (`metrics`) has the highest mAP of the
        main query set (the first evaluated) so far. Main process only."""
        main = next(iter(state.metrics))
        if state.best and state.metrics[main]["mAP"] <= state.best["mAP"]:
            return
        state.best = {"epoch": state.epoch, "iteration": state.iteration, "query_set": main,
                      "mAP": state.metrics[main]["mAP"], "metrics": state.metrics}
        save_checkpoint(self.files.best_checkpoint, state.state_dict(self.config, self.preprocess))
        self.log.info(f"new best {main} mAP {state.best['mAP']:.2f} at epoch {state.epoch}: "
                      f"{self.files.best_checkpoint}")
