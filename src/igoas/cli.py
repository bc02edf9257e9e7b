"""The `igoas` command line.

Each sub-command lives in its own module under `igoas.commands` exposing
`add_arguments(parser)` and `run(args) -> int`; modules are imported only when their
command runs, so `igoas --help` stays fast and optional libraries load only where used.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from igoas.errors import IgoasError

# command name -> (module under igoas.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "generate the synthetic occluded dataset, train IGOAS on it and report"),
    "train": ("train", "train a model from a YAML config with key=value overrides"),
    "eval": ("evaluate", "evaluate a checkpoint on a dataset (R1/R5/R10, mAP, mINP)"),
    "data": ("data", "dataset tools: check a copy, print statistics, render the synthetic set"),
    "extract": ("extract", "write embeddings of a folder or dataset split to a file"),
    "search": ("search", "build and query a FAISS gallery index"),
    "export": ("export", "export a checkpoint to ONNX or TorchScript and verify it"),
    "viz": ("viz", "draw the paper's figures and a run's HTML report"),
    "robustness": ("robustness", "occlusion stress test: metrics against occluded query area"),
    "import-official": ("official", "import a checkpoint trained with the authors' code"),
    "export-official": ("official_export", "write an igoas checkpoint in the authors' key layout"),
    "ablation": ("ablation", "train and compare the occlusion methods on the synthetic benchmark"),
    "reproduce": ("reproduce", "run a paper table's recipe and compare with the published numbers"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="igoas", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            importlib.import_module(f"igoas.commands.{module_name}").add_arguments(sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(f"igoas.commands.{COMMANDS[args.command][0]}")
    try:
        return int(module.run(args) or 0)
    except IgoasError as err:
        print(f"igoas {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"igoas {args.command}: interrupted", file=sys.stderr)
        return 130
