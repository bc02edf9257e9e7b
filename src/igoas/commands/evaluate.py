"""`igoas eval [CONFIG] --weights CKPT [--rerank] [key=value ...]`: R1/R5/R10/mAP/mINP per query set."""
from __future__ import annotations

import argparse
from pathlib import Path

from igoas.artifacts.provenance import evaluation_record
from igoas.artifacts.run_dir import RunDir
from igoas.commands.arguments import add_overrides, split_config_and_overrides
from igoas.data.base import protocol_title
from igoas.evaluation import format_table
from igoas.evaluation.model_evaluation import eval_datasets, evaluate_checkpoint, results_document
from igoas.utils.fileio import check_output, write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?",
                        help="YAML config or preset naming the dataset(s); default: the config saved in the checkpoint")
    add_overrides(parser, "dotted overrides, e.g. data.root=/data")
    parser.add_argument("--weights", required=True, metavar="CKPT", help="igoas checkpoint (.pth)")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (eval.k1/k2/lambda_value)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress of embedding and ranking (shown on stderr: bars on a terminal, "
                             "else a few timestamped lines)")
    parser.add_argument("--out", metavar="JSON",
                        help="where to write the metrics (default: eval_NAME.json in the checkpoint's run "
                             "directory for checkpoints/NAME.pth, else NAME.eval.json beside the file)")


def default_output(checkpoint: Path) -> Path:
    """`RUN/eval_X.json` for `RUN/checkpoints/X.pth`, else `X.eval.json` beside the file: never the
    training's own `metrics.json`, whose best-epoch record would be lost."""

    run_dir = RunDir.of_checkpoint(checkpoint)
    return run_dir.root / f"eval_{checkpoint.stem}.json" if run_dir is not None else checkpoint.with_suffix(".eval.json")


def run(args: argparse.Namespace) -> int:
    config, overrides = split_config_and_overrides(args.config, args.overrides)
    if args.rerank:
        overrides.append("eval.rerank=true")
    out = check_output(args.out if args.out else default_output(Path(args.weights)))
    results, payload, cfg = evaluate_checkpoint(args.weights, config, overrides, progress=not args.no_progress)
    datasets = eval_datasets(cfg)  # read again for the protocol each reader used (no image is decoded)
    for name, dataset in datasets.items():
        print(protocol_title(name, dataset.protocol_info))
    print(format_table(results))
    document = results_document(results, epoch=payload.get("epoch"),
                                **evaluation_record(cfg, args.weights, payload.get("preprocess"), datasets))
    write_json(out, document)
    print(f"metrics written to {out}")
    return 0
