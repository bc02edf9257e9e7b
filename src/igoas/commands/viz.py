"""`igoas viz FIGURE ...`: the paper's figures, a run's curves and its HTML report.

Figures: activations (Fig. 8), compare (Fig. 9), occlusion (Fig. 4-6), ranked, cmc,
curves, distances (+ ROC), report. Each writes PNG (or HTML) and prints where.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from igoas.commands.arguments import add_reader_options, non_negative_int, positive_int, reader_options, seed_number
from igoas.data import build_dataset, query_samples
from igoas.deploy.extraction import checkpoint_cmc, path_images, query_and_gallery
from igoas.deploy.inference import ReIDModel
from igoas.evaluation.distance import compute_distance
from igoas.imaging.preprocess import Preprocess
from igoas.utils.errors import IgoasError
from igoas.utils.fileio import check_output
from igoas.viz import (RankedLists, activation_maps, plot_activation_comparison, plot_activation_maps, plot_cmc_curves,
                       plot_distance_distributions, plot_occlusion_methods, plot_roc, plot_training_curves, roc_curve,
                       sampled_pair_distances, write_html_report)
from igoas.viz._figure import figure_format


# ----------------------------------------------------------------------------- arguments
def _image_source(parser: argparse.ArgumentParser, default_num: int) -> None:
    parser.add_argument("--images", nargs="+", default=[], metavar="IMAGE",
                        help="image files or folders to draw (default: --num images of a dataset split)")
    _dataset(parser, required=False)
    parser.add_argument("--split", default="query", help="dataset split the images come from (default query)")
    parser.add_argument("--num", type=positive_int, default=default_num, help=f"images taken from the split (default {default_num})")


def _dataset(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--dataset", required=required, help="dataset name (market1501, occluded_duke, synthetic, ...)")
    parser.add_argument("--root", required=required, help="folder holding the dataset")
    add_reader_options(parser)


def _extraction(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images embedded per forward pass (default 64)")
    parser.add_argument("--num-workers", "--workers",
                        type=non_negative_int, default=0, help="image-decoding processes (default 0: main process)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="rank without query or gallery images that cannot be read (this changes the numbers; "
                             "default: stop and name them)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    figures = parser.add_subparsers(dest="figure", metavar="FIGURE", required=True)

    p = figures.add_parser("activations", help="stage-4 activation maps of the global and suppression branches (Fig. 8)")
    p.add_argument("checkpoint", help="igoas checkpoint (.pth)")
    _image_source(p, 6)
    p.add_argument("--out", required=True, help="PNG to write")

    p = figures.add_parser("compare", help="the same images' activation maps under several checkpoints (Fig. 9)")
    p.add_argument("checkpoints", nargs="+", help="igoas checkpoints, one column each")
    _image_source(p, 4)
    p.add_argument("--labels", help="comma-separated column labels (default: checkpoint file names)")
    p.add_argument("--branch", default="global", help="branch whose maps are compared (default global, which every model has)")
    p.add_argument("--out", required=True, help="PNG to write")

    p = figures.add_parser("occlusion", help="what each occlusion method does to one batch across epochs (Fig. 4-6)")
    _image_source(p, 4)
    p.add_argument("--methods", help="comma-separated occlusion methods (default: all but none)")
    p.add_argument("--epochs", default="0,15,30,45,60,89", help="comma-separated epochs (default 0,15,30,45,60,89)")
    p.add_argument("--height", type=positive_int, default=384, help="image height the methods work at (default 384)")
    p.add_argument("--width", type=positive_int, default=128, help="image width the methods work at (default 128)")
    p.add_argument("--seed", type=seed_number, default=0, help="seed of the random occlusions (default 0)")
    p.add_argument("--out", required=True, help="PNG to write")

    p = figures.add_parser("ranked", help="queries and their top-K gallery images, green/red framed")
    p.add_argument("checkpoint", help="igoas checkpoint (.pth)")
    _dataset(p)
    p.add_argument("--query-set", default="query", help="query or an extra query set (e.g. holistic)")
    p.add_argument("--num-queries", type=positive_int, default=8, help="queries drawn, spread over the set (default 8)")
    p.add_argument("--topk", type=positive_int, default=10, help="gallery images per query (default 10)")
    p.add_argument("--metric", default="euclidean", choices=["euclidean", "cosine"],
                   help="query-gallery distance (default euclidean)")
    _extraction(p)
    p.add_argument("--out", required=True, help="image to write (.png, .jpg, .pdf, .svg); with --per-query a folder")
    p.add_argument("--per-query", action="store_true",
                   help="one image per query in the --out folder (001_<query>.png, ...), as torchreid's visrank")

    p = figures.add_parser("cmc", help="CMC curves of several runs on one plot")
    p.add_argument("results", nargs="+",
                   help="JSON files holding a 'cmc' list (igoas eval output) or checkpoints (evaluated on --dataset)")
    _dataset(p, required=False)
    p.add_argument("--query-set", default="query", help="which query set's curve to take (default query)")
    p.add_argument("--labels", help="comma-separated curve labels (default: file names)")
    p.add_argument("--max-rank", type=positive_int, default=20, help="last rank on the x axis (default 20)")
    _extraction(p)
    p.add_argument("--out", required=True, help="PNG to write")

    p = figures.add_parser("curves", help="a run's training curves from train_log.jsonl and metrics.jsonl")
    p.add_argument("run_dir", help="run directory written by `igoas train`")
    p.add_argument("--out", help="PNG to write (default RUN_DIR/figures/training_curves.png)")

    p = figures.add_parser("distances", help="positive/negative pair distance distributions and the ROC curve")
    p.add_argument("checkpoint", help="igoas checkpoint (.pth)")
    _dataset(p)
    p.add_argument("--query-set", default="query", help="query or an extra query set (e.g. holistic)")
    p.add_argument("--metric", default="cosine", choices=["euclidean", "cosine"],
                   help="distance shown (default cosine: 1 - cosine similarity)")
    p.add_argument("--fprs", default="1e-4,1e-3,1e-2", help="false positive rates to report the TPR at")
    p.add_argument("--max-negatives", type=positive_int, default=2_000_000,
                   help="negative pairs sampled (uniformly, seeded) when there are more (default 2,000,000)")
    _extraction(p)
    p.add_argument("--out-dir", required=True, help="folder for distances.png and roc.png")

    p = figures.add_parser("report", help="an HTML report of a run: metrics table and figures")
    p.add_argument("run_dir", help="run directory written by `igoas train` or `igoas demo`")
    p.add_argument("--out", help="HTML file to write (default RUN_DIR/report.html)")


def run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    written = FIGURES[args.figure](args)
    for path in written:
        print(f"wrote {path}")
    return 0


# ----------------------------------------------------------------------------- figures
def _activations(args: argparse.Namespace) -> list[Path]:
    model = _model(args.checkpoint, args)
    batch = model.preprocess(_image_paths(args))
    config = model.preprocess_config
    maps = activation_maps(model.network, batch)
    return [plot_activation_maps(batch, maps, args.out, mean=config.mean, std=config.std)]


def _compare(args: argparse.Namespace) -> list[Path]:
    labels = _labels(args.labels, args.checkpoints)
    paths = _image_paths(args)
    maps_per_model, display = {}, None
    for label, checkpoint in zip(labels, args.checkpoints):
        model = _model(checkpoint, args)
        batch = model.preprocess(paths)
        maps = activation_maps(model.network, batch)
        if args.branch not in maps:
            raise IgoasError(f"{checkpoint}: the model has no {args.branch!r} branch (it has {sorted(maps)}); "
                             "pick one with --branch")
        maps_per_model[label] = maps[args.branch]
        if display is None:
            display = (batch, model.preprocess_config)
    batch, config = display
    return [plot_activation_comparison(batch, maps_per_model, args.out, mean=config.mean, std=config.std)]


def _occlusion(args: argparse.Namespace) -> list[Path]:
    preprocess = Preprocess(args.height, args.width)
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    epochs = _numbers(args.epochs, "--epochs")
    return [plot_occlusion_methods(preprocess(_image_paths(args)), args.out, methods, epochs, seed=args.seed)]


def _ranked(args: argparse.Namespace) -> list[Path]:
    model = _model(args.checkpoint, args)
    dataset = _build_dataset(args)
    queries = _evenly_spaced(query_samples(dataset, args.query_set), args.num_queries)
    query, gallery = query_and_gallery(model, dataset, args.query_set, queries, args.batch_size, args.num_workers,
                                       _on_error(args))
    distances = compute_distance(query.embeddings, gallery.embeddings, args.metric)
    lists = RankedLists.from_distances(distances, query.paths, query.pids, query.camids, gallery.paths, gallery.pids,
                                       gallery.camids, args.topk, args.metric)
    return lists.plot(args.out, args.topk, per_query=args.per_query)


def _cmc(args: argparse.Namespace) -> list[Path]:
    labels = _labels(args.labels, args.results)
    curves = {label: _cmc_curve(source, args) for label, source in zip(labels, args.results)}
    return [plot_cmc_curves(curves, args.out, max_rank=args.max_rank, unit="percent")]


def _curves(args: argparse.Namespace) -> list[Path]:
    out = args.out or Path(args.run_dir) / "figures" / "training_curves.png"
    return [plot_training_curves(args.run_dir, out)]


def _distances(args: argparse.Namespace) -> list[Path]:
    model = _model(args.checkpoint, args)
    dataset = _build_dataset(args)
    query, gallery = query_and_gallery(model, dataset, args.query_set, batch_size=args.batch_size,
                                       num_workers=args.num_workers, on_error=_on_error(args))
    positive, negative = sampled_pair_distances(query.embeddings, gallery.embeddings, query.pids, gallery.pids,
                                                query.camids, gallery.camids, args.metric, args.max_negatives)
    roc = roc_curve(positive, negative)
    fprs = _numbers(args.fprs, "--fprs")
    for fpr, tpr in roc.tpr_at_fprs(fprs).items():
        print(f"TPR@FPR={fpr:g}: {100 * tpr:.2f}%")
    out_dir = Path(args.out_dir)
    return [plot_distance_distributions(positive, negative, out_dir / "distances.png", metric=args.metric),
            plot_roc(roc, out_dir / "roc.png", fprs)]


def _report(args: argparse.Namespace) -> list[Path]:
    return [write_html_report(args.run_dir, args.out)]


FIGURES: dict[str, Callable[[argparse.Namespace], list[Path]]] = {
    "activations": _activations, "compare": _compare, "occlusion": _occlusion, "ranked": _ranked, "cmc": _cmc,
    "curves": _curves, "distances": _distances, "report": _report,
}


# ----------------------------------------------------------------------------- helpers
FEATURES_SUFFIXES = (".npz", ".safetensors")


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse what would fail only after the models ran: an output suffix igoas does not
    write, or `viz cmc` inputs it cannot draw a curve from."""

    if hasattr(args, "option"):
        reader_options(args)  # -o without --dataset would be ignored
    out = getattr(args, "out", None)
    if out or getattr(args, "out_dir", None):
        check_output(out or args.out_dir, folder=bool(getattr(args, "per_query", False)) or not out)
    if args.figure == "report":
        if out and Path(out).suffix.lower() not in (".html", ".htm"):
            raise IgoasError(f"--out {out}: the report is an HTML page; name it .html")
    elif out and not getattr(args, "per_query", False):
        figure_format(out)
    if args.figure == "cmc":
        for source in args.results:
            _check_cmc_source(Path(source), args)


def _check_cmc_source(path: Path, args: argparse.Namespace) -> None:
    suffix = path.suffix.lower()
    if suffix in FEATURES_SUFFIXES:
        raise IgoasError(f"{path}: a features file (from `igoas extract`) holds embeddings, not a CMC curve; "
                         "`viz cmc` takes the JSON `igoas eval --out FILE.json` writes, or a checkpoint together "
                         "with --dataset NAME --root FOLDER")
    if not path.is_file():
        raise IgoasError(f"{path}: no such file; `viz cmc` takes evaluation JSON files or checkpoints")
    if suffix != ".json" and not (args.dataset and args.root):
        raise IgoasError(f"{path}: a checkpoint is evaluated to draw its curve, which needs --dataset NAME "
                         "--root FOLDER; or pass the JSON `igoas eval` wrote")


def _model(checkpoint: str, args: argparse.Namespace) -> Any:
    # fp32 keeps figures identical on every machine; they are not speed-critical.
    return ReIDModel.from_checkpoint(checkpoint, device=getattr(args, "device", "cpu"), precision="fp32",
                                     channels_last=False)


def _on_error(args: argparse.Namespace) -> str:
    """What ranking does with an unreadable query or gallery image: stop (default) or skip it."""
    return "skip" if args.skip_unreadable else "fail"


def _build_dataset(args: argparse.Namespace) -> Any:
    if not args.dataset or not args.root:
        raise IgoasError("this figure needs a dataset: pass --dataset NAME --root FOLDER")
    return build_dataset(args.dataset, args.root, **reader_options(args))


def _image_paths(args: argparse.Namespace) -> list[str]:
    """The images a figure draws: --images, else --num evenly spaced ones of the dataset split."""

    if args.images:
        return path_images(args.images).paths
    if not args.dataset:
        raise IgoasError("pass the images to draw with --images, or a dataset with --dataset NAME --root FOLDER")
    dataset = _build_dataset(args)
    splits = dataset.splits()
    samples = splits.get(args.split, splits.get(f"query:{args.split}"))
    if samples is None:
        raise IgoasError(f"dataset {args.dataset} has no split {args.split!r}; choose one of {sorted(splits)}")
    return [sample.path for sample in _evenly_spaced(samples, args.num)]


def _evenly_spaced(samples: Sequence[Any], count: int) -> list[Any]:
    """`count` samples spread over the list (datasets are sorted by identity, so this spans identities)."""
    if not samples:
        raise IgoasError("the chosen split is empty")
    indices = np.unique(np.linspace(0, len(samples) - 1, max(1, min(count, len(samples)))).round().astype(int))
    return [samples[i] for i in indices]


def _cmc_curve(source: str, args: argparse.Namespace) -> np.ndarray:
    """A CMC curve in percent: from an evaluation JSON file (which holds percentages), or by
    evaluating a checkpoint on --dataset (fractions, scaled here)."""
    path = Path(source)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise IgoasError(f"{path}: cannot read it as JSON ({err})") from None
        # `igoas eval` nests results under query_sets/NAME; a bare RankResult.to_dict() has cmc on top.
        candidates = [data, data.get(args.query_set), (data.get("query_sets") or {}).get(args.query_set)] \
            if isinstance(data, dict) else []
        entry = next((c for c in candidates if isinstance(c, dict) and isinstance(c.get("cmc"), list)), None)
        if entry is None:
            raise IgoasError(f"{path}: no 'cmc' list for query set {args.query_set!r}; pass the metrics.json "
                             "`igoas eval` writes, or a checkpoint with --dataset/--root")
        return np.asarray(entry["cmc"], dtype=np.float64)

    return 100.0 * checkpoint_cmc(_model(source, args), _build_dataset(args), args.query_set, args.max_rank,
                                  args.batch_size, args.num_workers, _on_error(args))


def _labels(text: str | None, sources: Sequence[str]) -> list[str]:
    if text is None:
        labels = [_default_label(Path(source)) for source in sources]
        if len(set(labels)) < len(labels):  # e.g. two runs' best.pth: name them by folder too
            labels = [f"{Path(source).parent.name}/{label}" for source, label in zip(sources, labels)]
        return labels
    labels = [label.strip() for label in text.split(",")]
    if len(labels) != len(sources):
        raise IgoasError(f"--labels gives {len(labels)} label(s) for {len(sources)} input(s)")
    return labels


def _default_label(path: Path) -> str:
    """The run a result or checkpoint belongs to, not the generic file name (`metrics`, `best`).

    RUN/metrics.json -> RUN; X.metrics.json -> X; RUN/checkpoints/best.pth -> RUN best; and
    `igoas eval`'s outputs: RUN/eval_best.json -> RUN best, X.eval.json -> X.
    """
    if path.parent.name == "checkpoints":
        return f"{path.parent.parent.name} {path.stem}"
    if path.stem == "metrics":
        return path.parent.resolve().name
    if path.stem.startswith("eval_"):
        return f"{path.parent.resolve().name} {path.stem.removeprefix('eval_')}"
    return path.stem.removesuffix(".metrics").removesuffix(".eval")


def _numbers(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise IgoasError(f"{option}: expected comma-separated numbers, got {text!r}") from None
