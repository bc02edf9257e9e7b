"""`igoas ablation [--seeds 3] [--out DIR] [--reduced] [--methods ...] [key=value ...]`.

Trains the six compared methods on the synthetic occluded benchmark with one shared
recipe from the synthetic-pretrained trunk, then writes table.md, results.json,
curves.png, stress.png and activations.png to --out (and beside the per-run records in
--records). Re-running the same command reuses every run whose record matches.
"""
from __future__ import annotations

import argparse

from igoas.commands.arguments import add_overrides
from igoas.studies.ablation import ARMS, DEFAULT_RECIPE, run_ablation
from igoas.utils.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Takes hours on a CPU: on the idle 2-core development machine a baseline-type run about "
                     "14.5 min and an IGOAS-type run about 28 min, so one seed of the six arms about 2.1 h and "
                     "three seeds about 6.4 h (docs/ablation.md); --reduced --seeds 1 checks the pipeline in minutes.")
    add_overrides(parser, "dotted overrides of the recipe, applied before each method's own settings")
    parser.add_argument("--seeds", default="3",
                        help="number of seeds (3: seeds 1, 2, 3) or a comma-separated list (e.g. 4,5)")
    parser.add_argument("--out", default="runs/ablation", help="study folder (runs, table, figures)")
    parser.add_argument("--records", metavar="DIR",
                        help="folder of the small per-run records (default: OUT/records); commit it to finish a "
                             "study across sessions")
    parser.add_argument("--methods", nargs="+", choices=list(ARMS), metavar="METHOD",
                        help=f"subset of the methods to train (default: all of {', '.join(ARMS)})")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, help="preset name or YAML file of the shared recipe")
    parser.add_argument("--reduced", action="store_true",
                        help="tiny data and pretraining, two epochs, small stress test: checks the pipeline in minutes; "
                             "its numbers mean nothing")


def parse_seeds(text: str) -> int | list[int]:
    """"3" -> 3 (seeds 1..3); "4,5" -> [4, 5]."""

    try:
        parts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: give a count (3) or comma-separated seeds (1,2,3)") from None
    return parts[0] if "," not in text and len(parts) == 1 else parts


def run(args: argparse.Namespace) -> int:
    result = run_ablation(args.out, seeds=parse_seeds(args.seeds), methods=args.methods, recipe=args.recipe,
                          reduced=args.reduced, overrides=args.overrides, records_dir=args.records)
    print(result.files["table"].read_text())
    return 0
