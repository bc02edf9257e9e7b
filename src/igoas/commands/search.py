"""`igoas search build|query`: a FAISS gallery index from a features file, and queries against it."""
from __future__ import annotations

import argparse
from typing import Any

from igoas.artifacts.provenance import sha256_of
from igoas.commands.arguments import positive_int
from igoas.data.base import camera_name
from igoas.deploy.extraction import path_images
from igoas.deploy.inference import ReIDModel
from igoas.evaluation.distance import distance_from_similarity
from igoas.retrieval import GalleryIndex, load_features
from igoas.utils.errors import IgoasError
from igoas.utils.fileio import check_output
from igoas.viz import plot_ranked_lists
from igoas.viz._figure import figure_format


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    build = actions.add_parser("build", help="index a features file written by `igoas extract`")
    build.add_argument("features", help="features file (.safetensors or .npz)")
    build.add_argument("--index", required=True, help="index file to write (its metadata goes to INDEX.json)")
    build.add_argument("--kind", default="flat", choices=["flat", "ivf", "hnsw"],
                       help="flat: exact (default); ivf / hnsw: approximate, for very large galleries")
    build.add_argument("--nlist", type=positive_int, help="ivf: number of lists (default: from the gallery size)")
    build.add_argument("--nprobe", type=positive_int, help="ivf: lists visited per query (default 16)")
    build.add_argument("--m", type=positive_int, help="hnsw: links per node (default 32)")
    build.add_argument("--ef-construction", type=positive_int, help="hnsw: build-time beam width (default 200)")
    build.add_argument("--ef-search", type=positive_int, help="hnsw: search-time beam width (default 128)")

    query = actions.add_parser("query", help="rank the gallery for query images or saved query features")
    query.add_argument("index", help="index file written by `igoas search build`")
    query.add_argument("images", nargs="*", metavar="IMAGE", help="query image files or folders of them")
    query.add_argument("--features", metavar="FILE",
                       help="query embeddings written by `igoas extract` (instead of images): nothing is re-embedded, "
                            "and the identities and cameras stored with them are shown")
    query.add_argument("--topk", type=positive_int, default=10, help="gallery entries listed per query (default 10)")
    query.add_argument("--summary-only", action="store_true",
                       help="print only the closing summary line, not every query's ranked list")
    query.add_argument("--weights", help="checkpoint that embeds the queries (default: the one that made the gallery)")
    query.add_argument("--draw", metavar="OUT.png",
                       help="also draw each query and its top-K with identities and distances (.png, .jpg, .pdf, .svg)")
    query.add_argument("--metric", default="euclidean", choices=["euclidean", "cosine"],
                       help="distance shown: euclidean (squared, of the unit embeddings, 0 to 4; default, as the "
                            "evaluation) or cosine (1 - cosine similarity, 0 to 2)")
    query.add_argument("--device", default="auto",
                       help="auto (a GPU when there is one), cpu, cuda or cuda:N for embedding the queries")
    query.add_argument("--precision", choices=["auto", "fp32", "tf32", "bf16", "fp16"],
                       help="default: the precision the gallery was embedded with")


def run(args: argparse.Namespace) -> int:
    return {"build": _build, "query": _query}[args.action](args)


def _build(args: argparse.Namespace) -> int:
    check_output(args.index)
    names = ("nlist", "nprobe", "m", "ef_construction", "ef_search")
    options = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    index = GalleryIndex.build(args.features, kind=args.kind, **options)
    index.save(args.index)
    settings = ", ".join(f"{k}={v}" for k, v in index.options.items())
    print(f"indexed {len(index)} gallery embeddings ({index.dim}-d) in a {args.kind} index"
          + (f" ({settings})" if settings else "") + f": {args.index}")
    return 0


def _query(args: argparse.Namespace) -> int:
    if bool(args.images) == bool(args.features):
        raise IgoasError("give the queries either as images (IMAGE ...) or as a features file (--features FILE)")
    if args.draw:
        check_output(args.draw)
        figure_format(args.draw)
    index = GalleryIndex.load(args.index)
    paths, pids, camids, embeddings = (_saved_queries(args, index) if args.features else _embedded_queries(args, index))
    result = index.search(embeddings, topk=args.topk)
    distances = distance_from_similarity(result.scores, args.metric)
    for row, path in enumerate([] if args.summary_only else paths):
        known = [f"identity {pids[row]}"] if pids[row] >= 0 else []
        known += [f"camera {camera_name(camids[row])}"] if camids[row] >= 0 else []
        print(f"query {path}" + (f" ({', '.join(known)})" if known else ""))
        print(f"  {'rank':>4}  {args.metric:>9}  {'id':>5}  {'cam':>4}  path")
        for rank, (distance, pid, cam, hit) in enumerate(
            zip(distances[row], result.pids[row], result.camids[row], result.paths[row]), start=1
        ):
            print(f"  {rank:>4}  {distance:9.4f}  {pid:>5}  {camera_name(cam):>4}  {hit}")
    if args.draw:
        # Green/red frames only where the query's identity is known; None draws a neutral frame.
        matches = [[bool(p == pids[row]) if pids[row] >= 0 else None for p in result.pids[row]]
                   for row in range(len(paths))]
        out = plot_ranked_lists(paths, result.paths, matches, args.draw, topk=args.topk,
                                scores_per_query=distances.tolist(), gallery_pids_per_query=result.pids.tolist(),
                                query_pids=list(pids), score_name=args.metric)
        print(f"drew the ranked lists to {out}")
    print(_summary(index, result, pids, args.topk))
    return 0


def _summary(index: Any, result: Any, query_pids: Any, topk: int) -> str:
    """One closing line: how many queries against how large a gallery, and for the queries
    of known identity how many find it first and within the top K (the whole gallery is
    searched, same-camera images included: not the evaluation protocol's R1)."""
    import numpy as np

    line = f"searched {len(query_pids)} quer{'y' if len(query_pids) == 1 else 'ies'} against {len(index)} gallery " \
           f"embeddings, top {topk} each"
    known = np.asarray(query_pids) >= 0
    if not known.any():
        return line + "; no query identity is known, so none is scored"
    hits = result.pids[known] == np.asarray(query_pids)[known][:, None]
    first, anywhere, count = int(hits[:, 0].sum()), int(hits.any(axis=1).sum()), int(known.sum())
    return (line + f"; of the {count} with a known identity, {first} ({100 * first / count:.1f} %) find it at rank 1 "
            f"and {anywhere} ({100 * anywhere / count:.1f} %) within the top {topk} (same-camera gallery images "
            "included: for the protocol's R1/mAP use igoas eval)")


def _embedded_queries(args: argparse.Namespace, index: Any) -> tuple[list[str], Any, Any, Any]:
    """Paths, identities, cameras and embeddings of query images, embedded by the gallery's checkpoint."""

    gallery_info: dict[str, Any] = index.metadata.get("features", {})
    weights = args.weights or gallery_info.get("checkpoint")
    if not weights:
        raise IgoasError(
            f"{args.index}: the index does not record which checkpoint embedded the gallery; pass --weights CKPT"
        )
    _warn_if_not_the_gallery_checkpoint(args.weights, gallery_info, args.index)
    queries = path_images(args.images)
    precision = args.precision or gallery_info.get("precision", "auto")
    model = ReIDModel.from_checkpoint(weights, device=args.device, precision=precision)
    return queries.paths, queries.pids, queries.camids, model.embed(queries.paths)


def _warn_if_not_the_gallery_checkpoint(weights: str | None, gallery_info: dict[str, Any], index: str) -> None:
    """--weights is meant for the gallery's checkpoint stored elsewhere: other bytes give incomparable scores."""
    import sys

    expected = gallery_info.get("checkpoint_sha256")
    if weights and expected and sha256_of(weights) != expected:
        print(f"warning: --weights {weights} is not the checkpoint that embedded the gallery of {index} "
              f"({gallery_info.get('checkpoint')}, other SHA-256); the scores compare embeddings of two models",
              file=sys.stderr)


def _saved_queries(args: argparse.Namespace, index: Any) -> tuple[list[str], Any, Any, Any]:
    """Paths, identities, cameras and embeddings of a features file, refused when another
    checkpoint than the gallery's embedded it (their embeddings are not comparable)."""

    if args.weights:
        raise IgoasError("--weights embeds query images; saved --features are used as they are, so drop one")
    features = load_features(args.features)
    gallery_info: dict[str, Any] = index.metadata.get("features", {})
    for key in ("checkpoint_sha256", "checkpoint"):
        mine, theirs = features.metadata.get(key), gallery_info.get(key)
        if mine and theirs:
            if mine != theirs:
                raise IgoasError(f"{args.features} was embedded by {features.metadata.get('checkpoint')} but the "
                                 f"gallery of {args.index} by {gallery_info.get('checkpoint')}; their embeddings "
                                 "cannot be compared: extract both with the same checkpoint")
            break
    return features.paths, features.pids, features.camids, features.embeddings

