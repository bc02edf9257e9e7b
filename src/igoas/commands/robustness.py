"""`igoas robustness CKPT [CKPT ...] --dataset NAME --root ROOT`: the occlusion stress test.

Evaluates each checkpoint with its queries occluded over growing areas at chosen
positions; prints R1/mAP/mINP, writes robustness.json and robustness.png to --out.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from igoas.robustness import DEFAULT_AREAS, DEFAULT_POSITIONS, FILLS, OCCLUDERS

    parser.add_argument("checkpoints", nargs="+", metavar="CKPT", help="igoas checkpoints to compare")
    parser.add_argument("--dataset", required=True, help="dataset name (occluded_duke, market1501, synthetic, ...)")
    parser.add_argument("--root", required=True, help="folder holding the dataset")
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
    parser.add_argument("--seed", type=int, default=0, help="seed of positions, colours and shapes")
    parser.add_argument("--metric", default="euclidean", choices=["euclidean", "cosine"],
                        help="query-gallery distance (default euclidean, as the authors evaluate)")
    parser.add_argument("--flip", action="store_true", help="average each embedding with its mirror image's")
    parser.add_argument("--batch-size", type=int, default=64, help="images embedded per forward pass (default 64)")
    parser.add_argument("--workers", type=int, default=2, help="image-decoding processes (0: main process)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16, fp16 or auto (see igoas.speed)")
    parser.add_argument("--out", default="robustness", help="folder for robustness.json and robustness.png")


def run(args: argparse.Namespace) -> int:
    from igoas.data import build_dataset
    from igoas.errors import ConfigError
    from igoas.robustness import occlusion_stress_test, parse_areas, write_stress_test

    checkpoints: list[str] | dict[str, str] = list(args.checkpoints)
    if args.labels:
        labels = [label.strip() for label in args.labels.split(",")]
        if len(labels) != len(checkpoints):
            raise ConfigError(f"--labels gives {len(labels)} name(s) for {len(checkpoints)} checkpoint(s)")
        checkpoints = dict(zip(labels, checkpoints))
    result = occlusion_stress_test(
        checkpoints, build_dataset(args.dataset, args.root), parse_areas(args.areas),
        [p.strip() for p in args.positions.split(",") if p.strip()], occluder=args.occluder, fill=args.fill,
        seed=args.seed, query_set=args.query_set, metric=args.metric, batch_size=args.batch_size,
        num_workers=args.workers, device=args.device, flip=args.flip, precision=args.precision, log=print)
    print(result.table())
    for path in write_stress_test(result, args.out).values():
        print(f"wrote {path}")
    return 0
