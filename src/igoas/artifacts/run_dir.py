"""`RunDir`: the one place that names the files of a run folder.

Training writes them, and evaluation, reports, figures, the ablation, the reproduction
check and the demo read them; all of them go through these names, so a file cannot be
renamed in one place and silently missed in another.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
    final_metrics = _file("metrics.json", "the last evaluation of training, or what `igoas eval` / the demo wrote")
    train_log = _file("train_log.jsonl", "one record per log interval")
    train_log_text = _file("train.log", "the same in plain text, with every message")
    metrics_log = _file("metrics.jsonl", "one record per evaluation")
    tensorboard = _file("tensorboard", "event files of the same scalars")
    report = _file("report.html", "the HTML report of the run")

    @classmethod
    def of_checkpoint(cls, checkpoint: str | os.PathLike[str]) -> "RunDir | None":
        """The run folder holding `checkpoint` (`RUN/checkpoints/X.pth`), or None for a loose file."""
        path = Path(checkpoint)
        return cls(path.parent.parent) if path.parent.name == CHECKPOINTS else None
