"""`igoas export-official IGOAS_CKPT --out OUT.pth.tar`: an igoas network in the authors' key layout."""
from __future__ import annotations

import argparse

from igoas.commands.arguments import non_negative_int
from igoas.interop.official import export_official
from igoas.utils.fileio import check_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="igoas checkpoint of an IGOAS network on ResNet-50")
    parser.add_argument("--out", required=True, help="torchreid checkpoint to write (e.g. model-best.pth.tar)")
    parser.add_argument("--epoch", type=non_negative_int, default=None, help="epoch to record (default: the checkpoint's)")
    parser.add_argument("--rank1", type=float, default=None,
                        help="rank-1 to record as a fraction, as torchreid stores it (0.601 for 60.1%%)")


def run(args: argparse.Namespace) -> int:
    check_output(args.out)
    path = export_official(args.checkpoint, args.out, epoch=args.epoch, rank1=args.rank1)
    print(f"wrote {path} in the authors' layout; evaluate it with their code via model.load_weights={path}")
    return 0
