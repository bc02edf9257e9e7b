"""A run's HTML report: metrics table, best and last evaluation, figures and config in one page.

The page is self-contained (inline style, no scripts, nothing fetched from the network)
and links its images by relative path, so the run folder can be copied or zipped
elsewhere and the report still opens.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import quote

from igoas.artifacts.run_dir import RunDir
from igoas.data.base import protocol_title
from igoas.utils.errors import IgoasError
from igoas.utils.fileio import atomic_write
from igoas.viz._figure import PathLike
from igoas.viz.curves import plot_training_curves
from igoas.viz.run_logs import RunLogs, flatten, load_run_logs

FIGURES_DIR = "figures"
CURVES_FILE = "training_curves.png"
# Folders of a run whose images are not figures for people (event files, caches).
SKIPPED_DIRS = {"tensorboard", "checkpoints", "__pycache__"}
RANKING_METRIC = "mAP"
# Progress counters of a log record: shown as the row label, not as metric columns.
COUNTERS = ("epoch", "iteration", "batch", "step")
FINAL_COLUMNS = ("R1", "R5", "R10", "mAP", "mINP")

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; }
td.text { text-align: left; font-family: monospace; }
tr.best td { background: #e6f4e6; font-weight: bold; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
"""


def write_html_report(run_dir: PathLike, out_path: PathLike | None = None) -> Path:
    """Write the report of `run_dir` (default `run_dir/report.html`) and return its path.

    Draws the training curves next to the report (`figures/training_curves.png`) when
    the run has logs, and shows every other PNG found in the run folder (the figures
    `igoas viz` and `igoas robustness` wrote there).
    """

    logs = load_run_logs(run_dir)
    out_path = Path(out_path) if out_path is not None else RunDir(logs.run_dir).report
    if not (logs.train or logs.metrics or logs.final_metrics):
        raise IgoasError(f"{logs.run_dir}: no train_log.jsonl, metrics.jsonl or metrics.json to report on; pass a run "
                         "directory written by `igoas train` or `igoas demo`")
    figures: list[Path] = []
    shown: set[Path] = set()
    if logs.train or logs.metrics:
        figures.append(plot_training_curves(logs.run_dir, out_path.parent / FIGURES_DIR / CURVES_FILE))
        # a report written outside the run draws fresh curves: the run's own copy would show them twice
        shown = {figures[0].resolve(), (logs.run_dir / FIGURES_DIR / CURVES_FILE).resolve()}
    figures += [path for path in _run_images(logs.run_dir) if path.resolve() not in shown]
    page = _page(logs, figures, out_path.parent)
    return atomic_write(out_path, lambda handle: handle.write(page.encode("utf-8")))


def _run_images(run_dir: Path) -> list[Path]:
    return sorted(path for path in run_dir.rglob("*.png")
                  if not any(part in SKIPPED_DIRS or part.startswith(".") for part in path.relative_to(run_dir).parts))


def _page(logs: RunLogs, figures: Sequence[Path], base: Path) -> str:
    title = f"igoas run: {logs.run_dir.name}"
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{_e(title)}</title>",
             f"<style>{_STYLE}</style></head><body>", f"<h1>{_e(title)}</h1>",
             f"<p>Run folder: <code>{_e(str(logs.run_dir))}</code></p>"]
    if logs.metrics:
        parts += ["<h2>Evaluations during training</h2>", _summary(logs.metrics), _table(logs.metrics, "epoch")]
    if logs.final_metrics:
        parts += ["<h2>Final evaluation</h2>", _final_table(logs.final_metrics)]
    if figures:
        parts.append("<h2>Figures</h2>")
        for path in figures:
            link = quote(Path(os.path.relpath(path, base)).as_posix())
            parts.append(f"<figure><img src='{link}' alt='{_e(path.stem)}'>"
                         f"<figcaption>{_e(path.stem.replace('_', ' '))} ({_e(link)})</figcaption></figure>")
    if logs.config_text:
        parts += ["<h2>Configuration</h2>", f"<details><summary>config.yaml</summary><pre>{_e(logs.config_text)}</pre>"
                  "</details>"]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _ranking_key(columns: Iterable[str]) -> str | None:
    """The first mAP column (the main query set's, in logging order)."""
    return next((key for key in columns if key.split("/")[-1] == RANKING_METRIC), None)


def _summary(records: list[dict[str, Any]]) -> str:
    """The best (by the main query set's mAP) and the last evaluation: one row per query set."""
    rows = [flatten(record) for record in records]
    key = _ranking_key(key for row in rows for key in row)
    if key is None:
        return ""
    scored = [index for index, row in enumerate(rows) if key in row]
    best_index = max(scored, key=lambda index: rows[index][key])
    query_sets = [name for name, value in records[best_index].items() if isinstance(value, dict)]
    columns = [c for c in dict.fromkeys(m for name in query_sets for m in records[best_index][name]) if c not in COUNTERS]
    header = "".join(f"<th>{_e(name)}</th>" for name in ("", "epoch", "query set", *columns))
    body = []
    for label, index in ((f"best (by {key})", best_index), ("last", scored[-1])):
        for position, name in enumerate(query_sets):
            values = records[index].get(name) or {}
            lead = (label, str(records[index].get("epoch", index))) if position == 0 else ("", "")
            cells = [f"<th>{_e(lead[0])}</th>", f"<td>{_e(lead[1])}</td>", f"<td class=text>{_e(name)}</td>"]
            cells += [f"<td>{values[c]:.2f}</td>" if isinstance(values.get(c), (int, float)) else "<td></td>"
                      for c in columns]
            body.append(f"<tr{' class=best' if index == best_index else ''}>{''.join(cells)}</tr>")
    return f"<table><tr>{header}</tr>\n" + "\n".join(body) + "</table>"


def _table(records: list[dict[str, Any]], index_key: str | None, highlight_best: bool = True) -> str:
    """Records as rows (labelled by `index_key`), their numbers as columns; the best row by mAP marked."""
    rows = [flatten(record) for record in records]
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns and key not in COUNTERS]
    key = _ranking_key(columns)
    best = (max(range(len(rows)), key=lambda i: rows[i].get(key, float("-inf")))
            if highlight_best and key and len(rows) > 1 else None)
    header = ([f"<th>{_e(index_key)}</th>"] if index_key else []) + [f"<th>{_e(c)}</th>" for c in columns]
    body = []
    for index, (record, row) in enumerate(zip(records, rows)):
        cells = [f"<td>{_e(str(record.get(index_key, index)))}</td>"] if index_key else []
        cells += [f"<td>{row[c]:.2f}</td>" if c in row else "<td></td>" for c in columns]
        body.append(f"<tr{' class=best' if index == best else ''}>{''.join(cells)}</tr>")
    return f"<table><tr>{''.join(header)}</tr>\n" + "\n".join(body) + "</table>"


def _final_table(final: dict[str, Any]) -> str:
    """`igoas eval`'s metrics.json: one row per query set when it has `query_sets`, else its numbers."""
    query_sets = final.get("query_sets")
    if not isinstance(query_sets, dict):
        return _table([final], None)
    shown_as = final.get("query_sets_shown_as") or {}
    untrained = (final.get("untrained") or {}).get("query_sets") or {}
    rows = []
    for suffix, sets in (("trained" if untrained else "", query_sets), ("untrained network", untrained)):
        rows += [{"query set": ", ".join(filter(None, (shown_as.get(name, name), suffix))),
                  **{k: v for k, v in values.items() if k in FINAL_COLUMNS or k.startswith("TPR@")}}
                 for name, values in sets.items() if isinstance(values, dict)]
    return _provenance(final) + _table(rows, "query set", highlight_best=False)


def _provenance(final: dict[str, Any]) -> str:
    """What the final numbers came from (see igoas.artifacts.provenance): a two-column table."""
    checkpoint = final.get("checkpoint")
    if not isinstance(checkpoint, dict):  # written before checkpoints were recorded with their hash
        checkpoint = {"path": checkpoint}
    rows = [("checkpoint", checkpoint.get("path")), ("SHA-256", checkpoint.get("sha256")), ("epoch", final.get("epoch"))]
    rows += [("data", _data_row(d)) for d in final.get("datasets") or [] if isinstance(d, dict)]
    settings = final.get("eval") or {}
    if settings:
        rows.append(("evaluation", ", ".join(f"{key} {value}" for key, value in settings.items())))
    versions = final.get("versions") or {}
    if versions:
        rows.append(("software", ", ".join(f"{name} {version}" for name, version in versions.items())))
    cells = [f"<tr><th>{_e(name)}</th><td class=text>{_e(str(value))}</td></tr>" for name, value in rows
             if value is not None]
    return f"<table>{''.join(cells)}</table>" if cells else ""


def _data_row(record: dict[str, Any]) -> str:
    """`NAME (protocol=...) at ROOT`; records written before protocols were kept give `NAME at ROOT`."""

    protocol = record.get("protocol")
    name = protocol_title(str(record.get("name")), protocol) if isinstance(protocol, dict) else record.get("name")
    return f"{name} at {record.get('root')}"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
