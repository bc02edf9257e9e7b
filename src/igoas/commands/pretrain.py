"""`igoas pretrain [--out DIR] [key=value ...]`: the synthetic-pretrained trunk.

Renders the pretraining population, trains the baseline network on it (or reuses a
finished run with the same config) and prints the trunk file to pass as
`model.pretrained=<path>`.
"""
from __future__ import annotations

import argparse

from igoas.commands.arguments import add_overrides
from igoas.studies.pretrain import DEFAULT_OUT, PRESET, pretrain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Takes hours on a CPU: 1 h 57 min on the 2-core development machine while it was "
                     "shared with other work (about half an hour idle, estimated; see README).")
    add_overrides(parser, "dotted overrides of the pretraining preset, e.g. model.backbone=resnet50")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder of the population, the run and trunk.pth")
    parser.add_argument("--preset", default=PRESET, help="preset name or YAML file of the pretraining recipe")


def run(args: argparse.Namespace) -> int:
    result = pretrain(args.out, overrides=args.overrides, preset=args.preset)
    for name, values in result.metrics.items():
        print(f"  held-out {name}: " + "  ".join(f"{key} {value:.1f}" for key, value in values.items()))
    print(result.trunk)
    return 0
