"""`igoas export CKPT --format onnx|openvino|torchscript`: write a deployable model and check it against PyTorch."""
from __future__ import annotations

import argparse

from igoas.commands.arguments import positive_int
from igoas.deploy.export import (CHECK_BATCH_SIZES, DEFAULT_OPSET, DEFAULT_TOLERANCE, EXPORT_FORMATS, MAX_OPSET,
                                 export_model)
from igoas.utils.fileio import check_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="igoas checkpoint (.pth)")
    parser.add_argument("--format", default="onnx", choices=sorted(EXPORT_FORMATS),
                        help="file format (default onnx; openvino writes an IR pair .xml + .bin)")
    parser.add_argument("--out", help="output file (default: the checkpoint path with .onnx, .xml or .pt)")
    parser.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, {DEFAULT_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})")
    parser.add_argument("--check-batch-sizes", type=int, nargs="+", default=list(CHECK_BATCH_SIZES),
                        help="batch sizes the export is checked on (default 3 5)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"largest accepted cosine distance to PyTorch (default {DEFAULT_TOLERANCE:g})")


def run(args: argparse.Namespace) -> int:
    if args.out:
        check_output(args.out)
    result = export_model(args.checkpoint, args.format, args.out, opset=args.opset,
                          check_batch_sizes=args.check_batch_sizes, tolerance=args.tolerance)
    check = result.check
    sizes = ", ".join(str(b) for b in check.batch_sizes)
    verdict = "passed" if check.passed else "FAILED"
    print(f"check {verdict}: {args.format} vs PyTorch fp32 on batches of {sizes} images: "
          f"max cosine distance {check.max_cosine_distance:.3e} (tolerance {check.tolerance:.0e})")
    if not check.passed:
        print(f"the export does not reproduce the model; nothing was written to {result.path}")
        return 1
    print(f"wrote {result.path}")
    return 0
