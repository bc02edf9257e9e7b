"""`RunDir`: the one place that names the files of a run folder, and the folder's guard.

Training writes them, and evaluation, reports, figures, the ablation, the reproduction
check and the demo read them; all of them go through these names, so a file cannot be
renamed in one place and silently missed in another.

`claim_run_folder` guards a folder for one run: an exclusive lock (`run.lock`, an `flock`
that the system releases when the process ends, even on kill -9, and that records the
holder's pid for the message); a fresh run refuses a folder that already holds files
unless it resumes or is told to overwrite, which removes only the run's own files; and
the temporary files a killed save left behind (`.last.pth.XXXX.tmp`, hundreds of MB) are
removed, which the lock makes safe: no live process can still be writing them.
"""
from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from igoas.utils.errors import ConfigError, IgoasError, describe_os_error
from igoas.utils.fileio import TEMPORARY_SUFFIX, file_mode

CHECKPOINTS = "checkpoints"


def _file(name: str, doc: str) -> property:
    """A read-only path property `root / name`."""
    return property(lambda self: self.root / name, doc=f"`{name}`: {doc}")


@dataclass(frozen=True)
class RunDir:
    """A run folder (`igoas train --out`, `train.output_dir`) and the paths inside it."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    config = _file("config.yaml", "the resolved run config")
    last_checkpoint = _file(f"{CHECKPOINTS}/last.pth", "replaced atomically, holds the state for an exact resume")
    best_checkpoint = _file(f"{CHECKPOINTS}/best.pth", "weights of the best evaluation (highest main mAP)")
    final_metrics = _file("metrics.json", "the last evaluation of training, or the demo's document "
                          "(`igoas eval` writes eval_NAME.json)")
    train_log = _file("train_log.jsonl", "one record per log interval")
    train_log_text = _file("train.log", "the same in plain text, with every message")
    metrics_log = _file("metrics.jsonl", "one record per evaluation")
    tensorboard = _file("tensorboard", "event files of the same scalars")
    report = _file("report.html", "the HTML report of the run")
    demo_marker = _file(".igoas_demo", "marks a folder whose run the demo may replace")

    # What a training run writes; `igoas train --overwrite` removes exactly these. The demo's
    # marker goes too: a run trained over a demo folder is no longer the demo's to replace.
    RUN_FILES = ("config.yaml", CHECKPOINTS, "train.log", "train_log.jsonl", "metrics.jsonl", "metrics.json",
                 "tensorboard", "report.html", ".igoas_demo")

    @classmethod
    def of_checkpoint(cls, checkpoint: str | os.PathLike[str]) -> "RunDir | None":
        """The run folder holding `checkpoint` (`RUN/checkpoints/X.pth`), or None for a loose file."""
        path = Path(checkpoint)
        return cls(path.parent.parent) if path.parent.name == CHECKPOINTS else None


LOCK_FILE = "run.lock"


@contextmanager
def claim_run_folder(folder: str | os.PathLike[str], *, resume: bool = False, overwrite: bool = False,
                     enabled: bool = True) -> Iterator[list[str]]:
    """Hold `folder` for one run; yields notes on what was cleaned up. `enabled=False`
    (the other processes of a distributed run) claims nothing."""
    if not enabled:
        yield []
        return
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: the run folder is a file; give a folder for --out / train.output_dir")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, file_mode())
    except OSError as err:
        raise IgoasError(f"cannot use {folder} as a run folder: {describe_os_error(err)}") from None
    locked = False
    try:
        _lock(handle, folder)
        locked = True
        notes = [] if resume else _prepare_fresh(folder, overwrite)
        notes += remove_orphaned_temporaries(folder)
        yield notes
    finally:
        if locked:
            os.ftruncate(handle, 0)
        os.close(handle)  # closing releases the lock


def _lock(handle: int, folder: Path) -> None:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(handle, 64, 0).decode(errors="replace").strip() or "unknown"
        raise IgoasError(f"{folder} is in use by another igoas process (pid {holder}, see {folder / LOCK_FILE}); "
                         "wait for it to finish, stop it, or give this run another folder") from None
    os.ftruncate(handle, 0)
    os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)


def _prepare_fresh(folder: Path, overwrite: bool) -> list[str]:
    existing = sorted(p.name for p in folder.iterdir() if p.name != LOCK_FILE)
    if not existing:
        return []
    if not overwrite:
        shown = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
        raise ConfigError(f"{folder} is not empty ({shown}); continue that run with `igoas train --resume "
                          f"{folder}`, give another --out folder, or pass --overwrite to replace its run files")
    removed = [name for name in RunDir.RUN_FILES if (folder / name).exists()]
    for name in removed:
        path = folder / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return [f"--overwrite: removed the earlier run's {', '.join(removed)}"] if removed else []


def remove_orphaned_temporaries(folder: Path) -> list[str]:
    """Delete the temporary files of interrupted atomic writes in the run folder and its
    checkpoints; only call while holding the folder's lock."""
    removed = []
    for place in (folder, folder / CHECKPOINTS):
        if not place.is_dir():
            continue
        for path in place.iterdir():
            if path.name.startswith(".") and path.name.endswith(TEMPORARY_SUFFIX) and path.is_file():
                size = path.stat().st_size
                path.unlink()
                removed.append(f"{path} ({size / 2**20:.1f} MB)")
    return [f"removed temporary files of an interrupted save: {', '.join(removed)}"] if removed else []
