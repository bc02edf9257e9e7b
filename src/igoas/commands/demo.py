"""`igoas demo [--out DIR] [--quick] [--overwrite]`: the whole pipeline on the synthetic dataset (`igoas.studies.demo`)."""
from __future__ import annotations

import argparse

from igoas.commands.arguments import add_overrides
from igoas.studies.demo import run_demo
from igoas.utils.fileio import check_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_overrides(parser, "dotted overrides of the demo preset")
    parser.add_argument("--out", default="runs/demo", metavar="DIR", help="report folder (default: runs/demo)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run of about a minute: tiny dataset, a few iterations")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run files of a --out folder that an earlier demo did not write")
    parser.add_argument("--data", metavar="DIR", help="where the synthetic set is rendered and cached "
                                                      "(default: data/synthetic, data/synthetic_tiny with --quick)")


def run(args: argparse.Namespace) -> int:
    check_output(args.out, folder=True)
    run_demo(args.out, quick=args.quick, data_dir=args.data, overrides=args.overrides, overwrite=args.overwrite)
    return 0
