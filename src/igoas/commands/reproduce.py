"""`igoas reproduce TABLE`: train the presets behind a paper table and compare with the published numbers."""
from __future__ import annotations

import argparse
from pathlib import Path

from igoas.fileio import write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="table1 (Occluded-Duke), table2 (Occluded-ReID, Partial-REID, Partial-iLIDS) "
                                      "or table3 (Market-1501, DukeMTMC-reID)")
    parser.add_argument("--root", help="folder holding the datasets (sets data.root and the targets' roots)")
    parser.add_argument("--out", default="runs/reproduce", help="folder for the runs and the comparison")
    parser.add_argument("--check", metavar="RUN_DIR", nargs="+",
                        help="do not train: compare existing run folders (one per preset of the table)")
    parser.add_argument("overrides", nargs="*", help="config overrides (key=value) applied to every run")


def run(args: argparse.Namespace) -> int:
    from igoas.reproduce import compare_run, table_rows

    rows = table_rows(args.table)
    out = Path(args.out)
    run_dirs = _given_runs(args.check, rows) if args.check else _train(rows, out, args.root, args.overrides)
    comparisons = [compare_run(run_dirs[row.preset], row) for row in rows]
    for comparison in comparisons:
        print("\n".join(comparison.lines()))
    report = out / f"{args.table}_comparison.json"
    write_json(report, [c.to_dict() for c in comparisons])
    print(f"comparison written to {report}")
    return 0


def _given_runs(run_dirs: list[str], rows) -> dict[str, Path]:
    """Match the given run folders to the table's presets by the preset name in their saved config path."""
    from igoas.errors import IgoasError

    presets = list(dict.fromkeys(row.preset for row in rows))
    if len(run_dirs) != len(presets):
        raise IgoasError(f"this table needs one run folder per preset ({', '.join(presets)}); got {len(run_dirs)}")
    return {preset: Path(run_dir) for preset, run_dir in zip(presets, run_dirs)}


def _train(rows, out: Path, root: str | None, overrides: list[str]) -> dict[str, Path]:
    """Train each preset of the table once (continuing a run that was interrupted)."""
    from igoas.config import load_config
    from igoas.artifacts.run_dir import RunDir
    from igoas.engine.trainer import train

    run_dirs = {}
    for preset in dict.fromkeys(row.preset for row in rows):
        run_dir = out / preset
        extra = [f"train.output_dir={run_dir}"] + ([f"data.root={root}"] if root else [])
        config = load_config(preset, extra + list(overrides))
        if root:
            for name in config.data.targets:
                config.data.target_options.setdefault(name, {})["root"] = root
        resume = run_dir if RunDir(run_dir).last_checkpoint.is_file() else None
        train(config, resume=resume, overwrite=resume is None)  # a run killed before its first checkpoint
        run_dirs[preset] = run_dir
    return run_dirs
