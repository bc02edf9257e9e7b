"""What a training run reports while it runs: progress bar, plain log, JSON lines, TensorBoard.

The bar is drawn only when stderr is a terminal; elsewhere (Slurm, nohup, CI, `> log`) the
timestamped line written every `train.log_every` iterations,
`epoch [1/60][20/200] iteration 20/12000 loss ... lr ... img/s eta H:MM:SS`, is the progress.

Files in the run directory (named by `igoas.artifacts.run_dir.RunDir`):
- `train.log`: plain text, one line per log interval and every message;
- `train_log.jsonl`: one JSON object per log interval (epoch (1-based), iteration (global,
  counted from 1), batch (within the epoch), lr, grad_norm, every loss term, the ID-loss
  weights, the IGO area ratio, images/s; for occluding methods the stage-4 mask activity
  `mask_zeroed_cells` and `mask_hidden`, see `igoas.model.osm.mask_activity`);
- `metrics.jsonl`: one JSON object per evaluation (epoch, iteration, then per query set
  R1, R5, R10, mAP, mINP in percent);
- `tensorboard/`: the same scalars as event files.
Only the main process of a distributed run writes; the others get a silent logger.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from tqdm import tqdm

from igoas.artifacts.run_dir import RunDir
from igoas.utils.extras import MissingExtraError, optional
from igoas.utils.fileio import atomic_write
from igoas.utils.progress import format_duration, interactive, stamped


def truncate_jsonl(path: Path, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Drop the records `keep` rejects (a resumed run replaces what followed its checkpoint)."""

    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off when the run was killed
        if isinstance(record, dict) and keep(record):
            kept.append(line + "\n")
    atomic_write(path, lambda handle: handle.write("".join(kept).encode()))


class RunLogger:
    """Progress bar and log files of one run.

    `resume_step` (the global iteration a resumed run starts from) removes log records and
    TensorBoard events written after that point by the interrupted run, and
    `resume_text_bytes` (train.log's size at that checkpoint) its plain-text lines, so the
    logs read like one uninterrupted run.
    """

    def __init__(self, run_dir: Path | None, enabled: bool = True, log_every: int = 20, tensorboard: bool = True,
                 progress_bar: bool = True, resume_step: int | None = None,
                 resume_text_bytes: int | None = None) -> None:
        self.enabled = enabled and run_dir is not None
        self.run_dir = run_dir
        self.files = RunDir(run_dir) if run_dir is not None else None
        self.log_every = log_every
        self.show_bar = progress_bar and enabled and interactive()
        self._epochs = self._iters_per_epoch = 0
        self._bar: Any = None
        self._writer: Any = None
        self._window_start = time.perf_counter()
        self._window_images = 0
        self._session_start = time.perf_counter()
        self._session_steps = 0
        if not self.enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            truncate_jsonl(self.files.train_log, lambda record: record.get("iteration", 0) <= resume_step)
            truncate_jsonl(self.files.metrics_log, lambda record: record.get("iteration", 0) <= resume_step)
            if isinstance(resume_text_bytes, int) and 0 <= resume_text_bytes < self.text_size():
                # train.log as it stood at the checkpoint: the lines after it are written again
                with open(self.files.train_log_text, "r+b") as handle:
                    handle.truncate(resume_text_bytes)
        if tensorboard:
            self._writer = _summary_writer(self.files.tensorboard, resume_step)

    # ------------------------------------------------------------------ messages
    def info(self, message: str) -> None:
        """Print a message (above the progress bar) and append it to train.log."""
        if not self.enabled:
            return
        line = stamped(message)
        if self._bar is not None:
            self._bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)
        with open(self.files.train_log_text, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def text_size(self) -> int:
        """Bytes of train.log so far (saved with checkpoints, so a resume can cut what followed)."""
        path = self.files.train_log_text if self.files is not None else None
        return path.stat().st_size if path is not None and path.is_file() else 0

    # ------------------------------------------------------------------ training steps
    def start_epoch(self, epoch: int, epochs: int, iters_per_epoch: int, start_iteration: int = 0) -> None:
        """Open the epoch's progress bar (epoch is 0-based; shown 1-based)."""
        self._window_start, self._window_images = time.perf_counter(), 0
        self._epochs, self._iters_per_epoch = epochs, iters_per_epoch
        if self.show_bar:
            self._bar = tqdm(total=iters_per_epoch, initial=start_iteration, desc=f"epoch {epoch + 1}/{epochs}",
                             dynamic_ncols=True, leave=False, file=sys.stderr)

    def step(self, record: dict[str, Any], batch_images: int, total_steps: int) -> None:
        """One optimiser step: `record` holds epoch, iteration, batch, lr, loss, id_weights,
        occluded_fraction (for every occlusion method), and for occluding methods mask_zeroed_cells and mask_hidden (plain
        numbers); written out every `log_every` iterations."""
        self._window_images += batch_images
        self._session_steps += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self._window_start
        images_per_s = self._window_images / elapsed if elapsed > 0 else 0.0
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(_postfix(record, images_per_s), refresh=False)
        if record["iteration"] % self.log_every:
            return
        record = {**record, "images_per_s": round(images_per_s, 2)}
        self._window_start, self._window_images = time.perf_counter(), 0
        self._append(self.files.train_log, record)
        per_step = (time.perf_counter() - self._session_start) / max(self._session_steps, 1)
        eta = format_duration(per_step * (total_steps - record["iteration"]))
        self.info(f"epoch [{record['epoch']}/{self._epochs}][{record.get('batch', '-')}/{self._iters_per_epoch}] "
                  f"iteration {record['iteration']}/{total_steps} {_postfix(record, images_per_s)} eta {eta}")
        self._scalars("train", record, record["iteration"])

    def end_epoch(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ------------------------------------------------------------------ evaluation
    def metrics(self, epoch: int, iteration: int, results: Mapping[str, Mapping[str, float]]) -> None:
        """One evaluation: per query set, R1/R5/R10/mAP/mINP in percent."""
        if not self.enabled:
            return
        self._append(self.files.metrics_log, {"epoch": epoch, "iteration": iteration, **{k: dict(v) for k, v in results.items()}})
        for name, values in results.items():
            self.info(f"epoch {epoch} {name}: " + "  ".join(f"{key} {value:.1f}" for key, value in values.items()))
        self._scalars("eval", dict(results), iteration)

    def close(self) -> None:
        self.end_epoch()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------------ helpers
    def _append(self, path: Path, record: Mapping[str, Any]) -> None:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def _scalars(self, prefix: str, record: Mapping[str, Any], step: int) -> None:
        if self._writer is None:
            return
        for key, value in _flatten(record).items():
            if key not in ("epoch", "iteration", "batch"):
                self._writer.add_scalar(f"{prefix}/{key}", value, step)
        self._writer.flush()


def _summary_writer(folder: Path, resume_step: int | None) -> Any:
    try:
        writers = optional("torch.utils.tensorboard", "train.tensorboard")
    except MissingExtraError as err:  # the run goes on without events
        print(f"no TensorBoard events: {err} (or set train.tensorboard=false)", file=sys.stderr)
        return None
    # purge_step drops events an interrupted run wrote after the checkpoint it resumes from.
    return writers.SummaryWriter(log_dir=str(folder), purge_step=resume_step + 1 if resume_step is not None else None)


def _flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def _postfix(record: Mapping[str, Any], images_per_s: float) -> str:
    losses = " ".join(f"{name} {value:.4g}" for name, value in record.get("loss", {}).items())
    return f"{losses} lr {record['lr']:.2e} {images_per_s:.1f} img/s"
