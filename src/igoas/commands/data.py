"""`igoas data`: check a dataset copy, print its statistics, render the synthetic set."""
from __future__ import annotations

import argparse
from collections.abc import Callable

from igoas.commands.arguments import add_reader_options, non_negative_int, positive_int, seed_number
from igoas.data import build_dataset, published_statistics, render_synthetic
from igoas.data.check import check_dataset
from igoas.data.synthetic import read_meta
from igoas.utils.errors import ConfigError, DatasetError


def _dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="the folder holding the dataset")
    parser.add_argument("--dataset", required=True, metavar="NAME",
                        help="market1501, dukemtmcreid, occluded_duke, msmt17, cuhk03_np, occluded_reid, "
                             "partial_reid, partial_ilids, p_dukemtmc, custom or synthetic")
    add_reader_options(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate a copy: layout, names, images, splits",
                               description="Validate a dataset copy. Exit 0 when clean, 1 when problems were found.")
    _dataset_arguments(check)
    check.add_argument("--no-images", action="store_true", help="skip decoding every image (faster)")
    check.add_argument("--strict", action="store_true", help="count warnings as problems for the exit code")
    check.add_argument("--max-items", type=positive_int, default=20, help="files listed per problem (default 20)")
    check.add_argument("--num-workers", "--workers", type=non_negative_int, default=4, help="threads decoding images (default 4)")
    stats = actions.add_parser("stats", help="print the statistics table (ids, images, cameras per split)")
    _dataset_arguments(stats)
    synth = actions.add_parser("synth", help="render the synthetic occluded-pedestrian dataset")
    synth.add_argument("out", help="output folder (Market-1501 layout)")
    synth.add_argument("--ids", type=positive_int, default=None, help="identities to train and test on (default: the size's)")
    synth.add_argument("--seed", type=seed_number, default=0, help="random seed; the same seed renders the same set (default 0)")
    synth.add_argument("--size", default="default", help="tiny, small, default or large")
    synth.add_argument("--height", type=positive_int, default=128, help="image height in pixels (default 128)")
    synth.add_argument("--width", type=positive_int, default=64, help="image width in pixels (default 64)")
    synth.add_argument("--num-workers", "--workers",
                       type=non_negative_int, default=1, help="rendering processes (same output for any number)")


def _check(args: argparse.Namespace) -> int:
    report = check_dataset(args.root, args.dataset, verify_images=not args.no_images, num_workers=args.num_workers,
                           **dict(args.option))
    print(report.format(max_items=args.max_items))
    return report.exit_code(strict=args.strict)


def _stats(args: argparse.Namespace) -> int:
    options = dict(args.option)
    try:
        dataset = build_dataset(args.dataset, args.root, **options)
    except OSError as err:  # an unreadable folder or list file is a data problem, not a crash
        raise DatasetError(f"{args.dataset}: cannot read the copy at {args.root}: {err}") from None
    print(dataset.statistics(published_statistics(args.dataset, **options)))
    return 0


def _synth(args: argparse.Namespace) -> int:
    root = render_synthetic(args.out, num_ids=args.ids, seed=args.seed, size=args.size,
                            image_size=(args.height, args.width), num_workers=args.num_workers)
    print(build_dataset("synthetic", root).statistics())
    records = read_meta(root)["images"].values()
    for split in ("train", "query", "gallery"):
        fractions = [r["occluded_fraction"] for r in records if r["split"] == split]
        occluded = [f for f in fractions if f > 0]
        mean = f", {100 * sum(occluded) / len(occluded):.0f} % of the body hidden on average" if occluded else ""
        print(f"  {split}: {100 * len(occluded) / max(1, len(fractions)):.0f} % of images occluded{mean}")
    print(f"written to {root}")
    return 0


ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {"check": _check, "stats": _stats, "synth": _synth}


def run(args: argparse.Namespace) -> int:
    if args.data_command not in ACTIONS:
        raise ConfigError(f"unknown data action {args.data_command!r}; choose one of {', '.join(ACTIONS)}.")
    return ACTIONS[args.data_command](args)
