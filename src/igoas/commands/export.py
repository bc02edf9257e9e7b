"""`igoas export CKPT --format onnx|openvino|torchscript [--int8 --calibration DIR]`: write a deployable model
and check it against PyTorch."""
from __future__ import annotations

import argparse
from pathlib import Path

from igoas.commands.arguments import positive_int
from igoas.deploy.export import (CHECK_BATCH_SIZES, DEFAULT_CALIBRATION_COUNT, DEFAULT_INT8_MIN_COSINE, DEFAULT_OPSET,
                                 DEFAULT_TOLERANCE, EXPORT_FORMATS, MAX_OPSET, Quantization, export_model)
from igoas.utils.errors import IgoasError
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
    parser.add_argument("--int8", action="store_true",
                        help="ONNX only: quantise statically to int8 (QDQ, per-channel weights), calibrated on "
                             "--calibration")
    parser.add_argument("--calibration", metavar="IMAGES_DIR",
                        help="folder of person crops (searched recursively) that calibrates --int8")
    parser.add_argument("--calibration-count", type=positive_int, default=DEFAULT_CALIBRATION_COUNT,
                        help=f"crops to calibrate on, the first in sorted order (default {DEFAULT_CALIBRATION_COUNT}); "
                             "the next ones, up to 64, check the result")
    parser.add_argument("--int8-min-cosine", type=float, default=DEFAULT_INT8_MIN_COSINE,
                        help=f"lowest accepted cosine of int8 to PyTorch fp32 (default {DEFAULT_INT8_MIN_COSINE})")


def quantization(args: argparse.Namespace) -> Quantization | None:
    """The int8 settings, or None; --calibration without --int8 (and the reverse) is refused."""
    if args.int8 and not args.calibration:
        raise IgoasError("--int8 needs --calibration IMAGES_DIR: a folder of person crops like the ones the model "
                         "will embed (e.g. a dataset's bounding_box_train)")
    if args.calibration and not args.int8:
        raise IgoasError("--calibration is for --int8 only; add --int8, or leave --calibration out for an fp32 export")
    if not args.int8:
        return None
    return Quantization(Path(args.calibration), args.calibration_count, args.int8_min_cosine)


def run(args: argparse.Namespace) -> int:
    if args.out:
        check_output(args.out)
    int8 = quantization(args)
    result = export_model(args.checkpoint, args.format, args.out, opset=args.opset,
                          check_batch_sizes=args.check_batch_sizes, tolerance=args.tolerance, quantization=int8)
    check = result.check
    sizes = ", ".join(str(b) for b in check.batch_sizes)
    verdict = "passed" if check.passed else "FAILED"
    if int8 is None:
        print(f"check {verdict}: {args.format} vs PyTorch fp32 on batches of {sizes} images: "
              f"max cosine distance {check.max_cosine_distance:.3e} (tolerance {check.tolerance:.0e})")
    else:
        print(f"check {verdict}: onnx int8 vs PyTorch fp32 on {check.inputs} (batches of {sizes}): "
              f"min cosine {check.min_cosine:.6f} (bound {int8.min_cosine:g})")
    if not check.passed:
        print(f"the export does not reproduce the model; nothing was written to {result.path}")
        return 1
    print(f"wrote {result.path}")
    return 0
