"""Read what `igoas train` and `igoas eval` leave in a run directory, for figures and reports.

Log records are flattened to `name -> number` (nested keys joined with "/"), so the
figures follow whatever terms a run logged (extra losses, extra query sets) without a
fixed list of names.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from igoas.artifacts.run_dir import RunDir
from igoas.utils.errors import IgoasError
from igoas.utils.fileio import read_jsonl
from igoas.viz._figure import PathLike


@dataclass
class RunLogs:
    """The parsed logs of one run; absent files give empty lists / None."""

    run_dir: Path
    train: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    final_metrics: dict[str, Any] | None = None
    config_text: str | None = None


def load_run_logs(run_dir: PathLike) -> RunLogs:
    """The logs found in `run_dir` (train log, evaluation log, final metrics, config)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise IgoasError(f"{run_dir}: no such run directory; pass the folder `igoas train` wrote (its --out)")
    logs, files = RunLogs(run_dir), RunDir(run_dir)
    if files.train_log.is_file():
        logs.train = read_jsonl(files.train_log)
    if files.metrics_log.is_file():
        logs.metrics = read_jsonl(files.metrics_log)
    if files.final_metrics.is_file():
        try:
            final = json.loads(files.final_metrics.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise IgoasError(f"{files.final_metrics}: not valid JSON ({err.msg}); re-run `igoas eval`") from None
        logs.final_metrics = final if isinstance(final, dict) else None
    if files.config.is_file():
        logs.config_text = files.config.read_text(encoding="utf-8")
    return logs


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested record as `{"a/b": value}`; lists, strings and NaN are dropped."""
    flat: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat


def series(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Per flattened key, the (record index, value) pairs where the key is present, in first-seen order."""
    columns: dict[str, list[tuple[int, float]]] = {}
    for index, record in enumerate(records):
        for key, value in flatten(record).items():
            columns.setdefault(key, []).append((index, value))
    return columns
