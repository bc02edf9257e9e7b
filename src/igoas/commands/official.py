"""`igoas import-official CHECKPOINT --out OUT`: bring a checkpoint of the authors' code into igoas."""
from __future__ import annotations

import argparse

from igoas.interop.official import import_official
from igoas.utils.fileio import check_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint saved by the authors' torchreid code (model.pth.tar-N, "
                                           "model-best.pth.tar) or a bare state dict of their network")
    parser.add_argument("--out", required=True, help="igoas checkpoint to write (e.g. runs/official/best.pth)")


def run(args: argparse.Namespace) -> int:
    check_output(args.out)
    _, payload = import_official(args.checkpoint, out=args.out)
    source = payload["source"]
    details = [f"{len(payload['model'])} tensors", f"{payload['model_spec']['num_classes']} identities"]
    if source["epoch"] is not None:
        details.append(f"epoch {source['epoch']}")
    if source["rank1"] is not None:
        details.append(f"stored rank-1 {source['rank1']:.1%}")
    print(f"imported {args.checkpoint} ({', '.join(details)}) -> {args.out}")
    preprocess = payload["preprocess"]
    print(f"the imported model expects {preprocess['height']}x{preprocess['width']} (height x width) RGB input, "
          f"{preprocess.get('interpolation', 'bilinear')} resize, mean {preprocess['mean']}, std {preprocess['std']} "
          "(stored in the checkpoint; igoas eval, extract and search apply it)")
    return 0
