"""`igoas robustness CKPT [CKPT ...] --dataset NAME --root ROOT [--suite occlusion|corruptions]`.

The occlusion suite (default) evaluates each checkpoint with its queries occluded over
growing areas at chosen positions and writes robustness.json and robustness.png. The
corruptions suite evaluates it under 20 corruptions x 5 severities (the `corruptions`
extra) and writes corruptions.json, corruptions.md, corruption_heatmap.png and
corruption_samples.png. Both print their table and write to --out.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from igoas.commands.arguments import add_reader_options, non_negative_int, positive_int, reader_options, seed_number
from igoas.compute.runtime import Runtime
from igoas.corruptions import CORRUPTIONS, SEVERITIES
from igoas.data import build_dataset, query_samples
from igoas.robustness.corruption_benchmark import SETTINGS, corruption_benchmark
from igoas.robustness.corruption_records import FINISHED_NAME
from igoas.robustness.corruption_report import markdown_table, write_corruption_benchmark
from igoas.robustness.occluder_painting import FILLS, OCCLUDERS
from igoas.robustness.occlusion_stress import DEFAULT_AREAS, DEFAULT_POSITIONS, occlusion_stress_test, write_stress_test
from igoas.utils.errors import ConfigError
from igoas.utils.extras import require
from igoas.utils.fileio import check_output
from igoas.utils.progress import say


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", metavar="CKPT", help="igoas checkpoints to compare")
    parser.add_argument("--suite", default="occlusion", choices=["occlusion", "corruptions"],
                        help="occlusion (occluders over growing areas) or corruptions (blur, noise, weather, digital)")
    parser.add_argument("--dataset", required=True, help="dataset name (occluded_duke, market1501, synthetic, ...)")
    parser.add_argument("--root", required=True, help="folder holding the dataset")
    add_reader_options(parser)
    parser.add_argument("--areas", default=",".join(f"{a:g}" for a in DEFAULT_AREAS),
                        help="occluded percentages of each query, e.g. 0,10,20 or 0,10,...,60 (default 0,10,...,60)")
    parser.add_argument("--positions", default=",".join(DEFAULT_POSITIONS),
                        help=f"where the occluder sits, comma-separated from {','.join(DEFAULT_POSITIONS)}")
    parser.add_argument("--occluder", default="rectangle", choices=sorted(OCCLUDERS),
                        help="rectangle (one colour) or shapes (the synthetic generator's occluders)")
    parser.add_argument("--fill", default="random", choices=sorted(FILLS),
                        help="rectangle colour: random (one per query), black or grey")
    parser.add_argument("--query-set", default="query", help="query or an extra query set (e.g. holistic)")
    parser.add_argument("--labels", help="comma-separated names for the checkpoints (default: file names)")
    parser.add_argument("--corruptions", default="all",
                        help=f"corruptions suite: comma-separated names or all ({', '.join(CORRUPTIONS)})")
    parser.add_argument("--severities", default=",".join(map(str, SEVERITIES)), help="corruptions suite: 1-5")
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="corruptions suite: query (corrupted query, clean gallery), both (query and gallery "
                             "corrupted), random (a random corruption and severity per image)")
    parser.add_argument("--cache", help="corruptions suite: folder keeping corrupted images between runs")
    parser.add_argument("--seed", type=seed_number, default=0, help="seed of positions, colours and shapes, or of corruptions")
    parser.add_argument("--metric", default="euclidean", choices=["euclidean", "cosine"],
                        help="query-gallery distance (default euclidean, as the authors evaluate)")
    parser.add_argument("--flip", action="store_true", help="average each embedding with its mirror image's")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images embedded per forward pass (default 64)")
    parser.add_argument("--num-workers", "--workers",
                        type=non_negative_int, default=2, help="image-decoding processes (0: main process)")
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16, fp16 or auto (see igoas.compute.speed)")
    parser.add_argument("--no-progress", action="store_true", help="corruptions suite: no progress bar")
    parser.add_argument("--out", default="robustness", help="folder for the suite's table and figures")


def run(args: argparse.Namespace) -> int:
    check_output(args.out, folder=True)
    require("matplotlib", "drawing the suite's figures")  # before the compute, whose results it would lose
    checkpoints = _labelled_checkpoints(args)
    dataset = build_dataset(args.dataset, args.root, **reader_options(args))
    runtime = Runtime.resolve(args.device, args.precision, option="--device")
    print(f"embedding on {runtime.description}")
    if args.suite == "corruptions":
        return _run_corruptions(args, checkpoints, dataset, runtime)
    result = occlusion_stress_test(
        checkpoints, dataset, parse_areas(args.areas),
        [p.strip() for p in args.positions.split(",") if p.strip()], occluder=args.occluder, fill=args.fill,
        seed=args.seed, query_set=args.query_set, metric=args.metric, batch_size=args.batch_size,
        num_workers=args.num_workers, runtime=runtime, flip=args.flip, log=print)
    print(result.table())
    for path in write_stress_test(result, args.out).values():
        print(f"wrote {path}")
    return 0


def _labelled_checkpoints(args: argparse.Namespace) -> list[str] | dict[str, str]:
    checkpoints: list[str] | dict[str, str] = list(args.checkpoints)
    if args.labels:
        labels = [label.strip() for label in args.labels.split(",")]
        if len(labels) != len(checkpoints):
            raise ConfigError(f"--labels gives {len(labels)} name(s) for {len(checkpoints)} checkpoint(s)")
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ConfigError(f"--labels names {', '.join(map(repr, repeated))} more than once; give each "
                              "checkpoint its own label (the results are keyed by label)")
        checkpoints = dict(zip(labels, checkpoints))
    return checkpoints


def _run_corruptions(args: argparse.Namespace, checkpoints: list[str] | dict[str, str], dataset: object,
                     runtime: Runtime) -> int:

    names = list(CORRUPTIONS) if args.corruptions.strip() == "all" else _items(args.corruptions)
    try:
        severities = [int(s) for s in _items(args.severities)]
    except ValueError:
        raise ConfigError(f"--severities {args.severities!r}: give integers 1-5, e.g. 1,3,5") from None
    result = corruption_benchmark(
        checkpoints, dataset, names, severities, _items(args.settings), seed=args.seed, query_set=args.query_set,
        metric=args.metric, batch_size=args.batch_size, num_workers=args.num_workers, runtime=runtime,
        flip=args.flip, cache_dir=args.cache, progress=not args.no_progress, log=say,
        finished=Path(args.out) / FINISHED_NAME)
    print(markdown_table(result))
    sample = query_samples(dataset, args.query_set)[0].path
    for path in write_corruption_benchmark(result, args.out, sample_image=sample, sample_seed=args.seed).values():
        print(f"wrote {path}")
    return 0


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_areas(text: str) -> list[float]:
    """"0,10,20" -> [0, 10, 20]; "0,10,...,60" expands the step of the first two values up to the last."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        if "..." in parts:
            if parts.index("...") != 2 or len(parts) != 4:
                raise ValueError
            first, second, last = float(parts[0]), float(parts[1]), float(parts[3])
            step = second - first
            if step <= 0:
                raise ValueError
            return [first + i * step for i in range(int(math.floor((last - first) / step + 1e-9)) + 1)]
        return [float(part) for part in parts]
    except ValueError:
        raise ConfigError(f"cannot read areas {text!r}: give percentages like '0,10,20' or '0,10,...,60'") from None
