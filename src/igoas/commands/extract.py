"""`igoas extract CKPT IMAGES_DIR_OR_DATASET --out FEATURES [--dataset NAME -o KEY=VALUE]`: embeddings of a
folder or a dataset split; `--shards OUT_DIR` writes them as resumable shards, also under torchrun
(`igoas.deploy.sharded_extraction`)."""
from __future__ import annotations

import argparse
import sys

from igoas.commands.arguments import add_reader_options, non_negative_int, positive_int, reader_options
from igoas.compute.distributed import init_distributed, shutdown
from igoas.deploy.extraction import ImageList, dataset_images, extract, folder_images
from igoas.deploy.inference import ReIDModel
from igoas.deploy.sharded_extraction import DEFAULT_SHARD_SIZE, extract_sharded
from igoas.retrieval.features_file import check_features_path
from igoas.utils.errors import ConfigError
from igoas.utils.fileio import check_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="igoas checkpoint (.pth)")
    parser.add_argument("source", help="a folder of images, or a dataset root together with --dataset NAME")
    outputs = parser.add_mutually_exclusive_group(required=True)
    outputs.add_argument("--out", help="features file to write: .safetensors or .npz")
    outputs.add_argument("--shards", metavar="OUT_DIR",
                         help="write a folder of resumable shards instead (also under torchrun; see "
                              "'Sharded extraction' in docs/inference.md)")
    parser.add_argument("--shard-size", type=positive_int, default=None,
                        help=f"with --shards: images per shard (default {DEFAULT_SHARD_SIZE})")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="with --shards: CPU threads per process (default 1); the embeddings are bit-identical "
                             "only between runs with the same thread count")
    parser.add_argument("--dataset", help="read SOURCE as this dataset (market1501, occluded_duke, synthetic, ...)")
    parser.add_argument("--split", default="query",
                        help="with --dataset: train, query, gallery or an extra query set such as holistic (default query)")
    add_reader_options(parser)
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images embedded per forward pass (default 64)")
    parser.add_argument("--num-workers", "--workers",
                        type=non_negative_int, default=2, help="image-decoding processes (0: decode in the main process)")
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="fp32", choices=["auto", "fp32", "tf32", "bf16", "fp16"],
                        help="inference precision (default fp32, as igoas eval); auto picks bf16 where it is "
                             "native (see docs/inference.md)")
    parser.add_argument("--backend", default="pytorch", choices=["pytorch", "openvino", "auto"],
                        help="CPU inference back end (openvino: faster, same embeddings at fp32; auto: openvino "
                             "on AVX-512 CPUs when installed); see docs/inference.md")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    options = reader_options(args)
    given = [flag for flag, value in (("--shard-size", args.shard_size), ("--threads", args.threads)) if value]
    if given and not args.shards:
        raise ConfigError(f"{' and '.join(given)} only apply with --shards OUT_DIR (sharded extraction); "
                          "drop them, or write shards instead of --out")
    if args.shards:
        check_output(args.shards, folder=True)
    else:
        check_output(check_features_path(args.out))  # before any image is listed or embedded
    images = (dataset_images(args.dataset, args.source, args.split, options) if args.dataset
              else folder_images(args.source))
    if args.shards:
        return _run_sharded(args, images)
    model = ReIDModel.from_checkpoint(args.checkpoint, device=args.device, precision=args.precision,
                                      backend=args.backend)
    print(f"embedding on {model.runtime.description} ({model.backend})", file=sys.stderr)
    features = extract(model, images, args.out, batch_size=args.batch_size, num_workers=args.num_workers,
                       progress=not args.no_progress)
    for path, reason in features.metadata["bad_reasons"].items():
        print(f"skipped unreadable image: {reason}", file=sys.stderr)
    skipped = f"; {len(features.bad_paths)} unreadable image(s) skipped and listed in the file"
    print(f"wrote {len(features)} embeddings ({features.embeddings.shape[1]}-d) of {images.description} to {args.out}"
          + (skipped if features.bad_paths else ""))
    return 0


def _run_sharded(args: argparse.Namespace, images: ImageList) -> int:
    ctx = init_distributed(args.device)
    try:
        model = ReIDModel.from_checkpoint(args.checkpoint, device=ctx.device, precision=args.precision,
                                          backend=args.backend)
        run = extract_sharded(model, images, args.shards, shard_size=args.shard_size or DEFAULT_SHARD_SIZE,
                              batch_size=args.batch_size, num_workers=args.num_workers, threads=args.threads or 1,
                              ctx=ctx,
                              progress=not args.no_progress)
        print(f"rank {ctx.rank}/{ctx.world_size} on {model.runtime.description} ({model.backend}): embedded "
              f"{len(run.computed)} shard(s), reused {len(run.reused)} complete one(s)", file=sys.stderr)
        if run.manifest is not None:
            print(f"wrote {run.shards} shard(s) of {images.description} to {args.shards} ({run.manifest})")
    finally:
        shutdown(ctx)
    return 0
