"""The corruption benchmark's outputs: JSON (everything), a Markdown table, the heat-map
and the sample sheet, each written atomically."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from igoas.robustness.corruption_benchmark import GRID_SETTINGS, METRICS, CorruptionBenchmarkResult
from igoas.utils.fileio import atomic_write, write_json
from igoas.viz.corruption_figures import plot_corruption_heatmap, plot_corruption_samples

SETTING_TITLES = {"query": "corrupted query, clean gallery", "both": "corrupted query and gallery",
                  "random": "random corruption and severity per image (query and gallery)"}


def markdown_table(result: CorruptionBenchmarkResult) -> str:
    """Summary (clean, mean over the grid, worst case, random setting) then, per checkpoint and
    grid setting, R1 / mAP / mINP of every corruption (rows) at every severity (columns)."""
    summary = result.summary()
    lines = ["# Corruption benchmark", "", f"Dataset `{result.settings.get('dataset')}`, seed "
             f"{result.settings.get('seed')}; metrics in percent, cells R1 / mAP / mINP.", "",
             "| checkpoint | setting | clean | mean over corruptions x severities | worst case (lowest mAP) |",
             "| --- | --- | --- | --- | --- |"]
    for checkpoint, figures in summary.items():
        clean = _cell(figures.get("clean", {}))
        for setting in GRID_SETTINGS:
            if setting in figures:
                worst = figures[setting]["worst"]
                lines.append(f"| {checkpoint} | {SETTING_TITLES[setting]} | {clean} | "
                             f"{_cell(figures[setting]['mean'])} | {_cell(worst)} "
                             f"({worst['corruption']}, severity {worst['severity']}) |")
        if "random" in figures:
            lines.append(f"| {checkpoint} | {SETTING_TITLES['random']} | {clean} | {_cell(figures['random'])} | |")
    severities = result.settings.get("severities") or sorted({r.severity for r in result.records if r.severity})
    for checkpoint in summary:
        for setting in GRID_SETTINGS:
            rows = [r for r in result.records if r.checkpoint == checkpoint and r.setting == setting]
            if not rows:
                continue
            lines += ["", f"## {checkpoint}: {SETTING_TITLES[setting]}", "",
                      "| corruption | " + " | ".join(f"severity {s}" for s in severities) + " |",
                      "| --- |" + " --- |" * len(severities)]
            for corruption in dict.fromkeys(r.corruption for r in rows):
                cells = {r.severity: _cell(vars(r)) for r in rows if r.corruption == corruption}
                lines.append(f"| {corruption} | " + " | ".join(cells.get(s, "") for s in severities) + " |")
    return "\n".join(lines) + "\n"


def _cell(metrics: Mapping[str, Any]) -> str:
    return " / ".join(f"{float(metrics[m]):.1f}" for m in METRICS) if metrics else ""


def write_corruption_benchmark(result: CorruptionBenchmarkResult, out_dir: str | Path,
                               sample_image: Any | None = None, sample_seed: int = 0,
                               heatmap_setting: str | None = None) -> dict[str, Path]:
    """Write `corruptions.json`, `corruptions.md`, `corruption_heatmap.png` (when the grid ran) and,
    given an image (path or H x W x 3 uint8 array), `corruption_samples.png` to `out_dir`."""

    out_dir = Path(out_dir)
    data = result.to_dict()
    text = markdown_table(result)
    written = {"json": write_json(out_dir / "corruptions.json", data),
               "table": atomic_write(out_dir / "corruptions.md", lambda handle: handle.write(text.encode("utf-8")))}
    grid_settings: Sequence[str] = [s for s in GRID_SETTINGS if any(r.setting == s for r in result.records)]
    if grid_settings:
        setting = heatmap_setting or grid_settings[0]
        written["heatmap"] = plot_corruption_heatmap(data["results"], out_dir / "corruption_heatmap.png", setting)
    if sample_image is not None:
        written["samples"] = plot_corruption_samples(sample_image, out_dir / "corruption_samples.png",
                                                     corruptions=result.settings.get("corruptions"), seed=sample_seed)
    return written
