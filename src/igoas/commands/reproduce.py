"""`igoas reproduce TABLE`: train the presets behind a paper table and compare with the published numbers."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from igoas.artifacts.run_dir import CHECKPOINTS, LOCK_FILE, RunDir
from igoas.config import load_config
from igoas.studies.fingerprint import differences
from igoas.studies.reproduce import compare_run, match_runs, recipe, saved_recipe, table_rows
from igoas.training.trainer import train
from igoas.utils.errors import IgoasError
from igoas.utils.fileio import write_json

if TYPE_CHECKING:
    from omegaconf import DictConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="table1 (Occluded-Duke), table2 (Occluded-ReID, Partial-REID, Partial-iLIDS) "
                                      "or table3 (Market-1501, DukeMTMC-reID)")
    parser.add_argument("--root", help="folder holding the datasets (sets data.root and the targets' roots)")
    parser.add_argument("--out", default="runs/reproduce", help="folder for the runs and the comparison")
    parser.add_argument("--check", metavar="RUN_DIR", nargs="+",
                        help="do not train: compare existing run folders (one per preset of the table, in any "
                             "order: each is matched to its preset by the config it was trained with)")
    parser.add_argument("overrides", nargs="*", help="config overrides (key=value) applied to every run")


def run(args: argparse.Namespace) -> int:
    rows = table_rows(args.table)
    out = Path(args.out)
    presets = dict.fromkeys(row.preset for row in rows)
    configs = {preset: _preset_config(preset, args.root, args.overrides) for preset in presets}
    run_dirs = match_runs(args.check, configs) if args.check else _train(configs, out)
    comparisons = [compare_run(run_dirs[row.preset], row) for row in rows]
    for comparison in comparisons:
        print("\n".join(comparison.lines()))
    report = out / f"{args.table}_comparison.json"
    write_json(report, [c.to_dict() for c in comparisons])
    print(f"comparison written to {report}")
    return 0


def _preset_config(preset: str, root: str | None, overrides: list[str]) -> DictConfig:
    """The config a preset of the table trains with: the overrides, then `--root`, set on the
    config rather than as an override so that YAML never reads the path ("#", "yes", ": ")."""
    from omegaconf import OmegaConf

    config = load_config(preset, overrides)
    if root:
        config.data.root = root
        for name in config.data.targets:
            OmegaConf.update(config, f"data.target_options.{name}.root", root, force_add=True)
    return config


def _train(configs: dict[str, DictConfig], out: Path) -> dict[str, Path]:
    """Train each preset of the table once in `out/<preset>` (continuing a run that was interrupted)."""

    run_dirs = {}
    for preset, config in configs.items():
        run_dir = out / preset
        config.train.output_dir = str(run_dir)
        resume = run_dir if RunDir(run_dir).last_checkpoint.is_file() else None
        if resume is None:
            _check_fresh_start(run_dir, config)
        train(config, resume=resume, overwrite=resume is None)  # a run killed before its first checkpoint
        run_dirs[preset] = run_dir
    return run_dirs


def _check_fresh_start(run_dir: Path, config: DictConfig) -> None:
    """A fresh run replaces the run files in `run_dir`: refuse unless nothing is lost, that is
    the folder is empty or holds a run of this same config killed before its first checkpoint."""

    if not run_dir.is_dir() or not any(path.name != LOCK_FILE for path in run_dir.iterdir()):
        return
    checkpoints = sorted(path.name for path in (run_dir / CHECKPOINTS).glob("*.pth"))
    if checkpoints:
        held = f"checkpoints ({', '.join(checkpoints)}) but no last.pth to continue from"
    elif not RunDir(run_dir).config.is_file():
        held = "files but no run config.yaml"
    else:
        changes = differences(saved_recipe(run_dir), recipe(config))
        if not changes:
            return
        held = f"a run of another config ({'; '.join(changes[:5])})"
    raise IgoasError(f"{run_dir} holds {held}, a run `igoas reproduce` did not start or cannot continue; "
                     "move that folder away or give another --out, so that nothing there is replaced")
