"""`igoas search build|query`: a FAISS gallery index from a features file or a sharded
extraction's folder, and queries against it (optionally scored with `evaluate_topk`)."""
from __future__ import annotations

import argparse
import io
import sys
from typing import Any

import numpy as np

from igoas.artifacts.provenance import sha256_of
from igoas.commands.arguments import positive_int
from igoas.data.base import camera_name
from igoas.deploy.extraction import path_images
from igoas.deploy.inference import ReIDModel
from igoas.deploy.sharded_extraction import gallery_rows
from igoas.evaluation.distance import distance_from_similarity
from igoas.evaluation.topk_rank import evaluate_topk
from igoas.retrieval import GalleryIndex, load_features
from igoas.retrieval.index import DEFAULT_ADD_CHUNK
from igoas.utils.errors import IgoasError
from igoas.utils.fileio import atomic_write, check_output
from igoas.viz import plot_ranked_lists
from igoas.viz._figure import figure_format


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    build = actions.add_parser("build", help="index a features file or a shard folder written by `igoas extract`")
    build.add_argument("features", help="features file (.safetensors or .npz), or a folder written by "
                                        "`igoas extract --shards` (read shard by shard from the memory maps)")
    build.add_argument("--index", required=True, help="index file to write (its metadata goes to INDEX.json)")
    build.add_argument("--kind", default="flat", choices=["flat", "ivf", "ivf_pq", "hnsw"],
                       help="flat: exact (default); ivf / ivf_pq / hnsw: approximate, for very large galleries "
                            "(ivf_pq also compresses each vector to --pq-m bytes)")
    build.add_argument("--nlist", type=positive_int,
                       help="ivf, ivf_pq: number of lists (default: 4 sqrt(N), at most N/39)")
    build.add_argument("--nprobe", type=positive_int, help="ivf, ivf_pq: lists visited per query (default 16)")
    build.add_argument("--pq-m", type=positive_int,
                       help="ivf_pq: sub-quantisers of 8 bits, bytes per vector; divides the dimension (default D/4)")
    build.add_argument("--opq", action="store_true", help="ivf_pq: learn an OPQ rotation before quantising")
    build.add_argument("--train-size", type=positive_int,
                       help="ivf, ivf_pq: training vectors drawn from the gallery with a fixed seed "
                            "(default max(39 nlist, 10000), at most N)")
    build.add_argument("--add-chunk", type=positive_int, default=DEFAULT_ADD_CHUNK,
                       help=f"rows added to the index at a time (default {DEFAULT_ADD_CHUNK})")
    build.add_argument("--target-recall", type=float, metavar="R",
                       help="ivf, ivf_pq, hnsw: choose the smallest nprobe / ef-search whose recall@k against exact "
                            "search reaches R (0 < R <= 1) on held-out queries")
    build.add_argument("--tune-queries", metavar="FEATURES",
                       help="with --target-recall: the queries to tune on (default: 1000 gallery rows, each "
                            "leaving its own entry out)")
    build.add_argument("--tune-k", type=positive_int, default=10, help="with --target-recall: the k of recall@k "
                                                                       "(default 10)")
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
    query.add_argument("--topk-out", metavar="FILE.npz",
                       help="also write the Q x K gallery indices and squared Euclidean distances (2 - 2 score; "
                            "-1 / inf where empty) for `evaluate_topk`")
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
    names = ("nlist", "nprobe", "m", "ef_construction", "ef_search", "pq_m")
    options = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.opq:
        options["opq"] = 1
    tune_queries = None
    if args.tune_queries:
        if args.target_recall is None:
            raise IgoasError("--tune-queries is only used with --target-recall R")
        tune_queries = load_features(args.tune_queries).embeddings
    index = GalleryIndex.build(gallery_rows(args.features), kind=args.kind, train_size=args.train_size,
                               add_chunk=args.add_chunk, target_recall=args.target_recall,
                               tune_queries=tune_queries, tune_k=args.tune_k, **options)
    index.save(args.index)
    settings = ", ".join(f"{k}={v}" for k, v in index.options.items())
    print(f"indexed {len(index)} gallery embeddings ({index.dim}-d) in a {args.kind} index"
          + (f" ({settings})" if settings else "") + f": {args.index}")
    tuning = index.build_info.get("tuning")
    if tuning:
        print(f"target recall {tuning['target_recall']}: {tuning['option']}={tuning['value']} measures "
              f"recall@{tuning['k']} {tuning['recall']:.4f} on {tuning['queries']} queries "
              f"({tuning['queries_from']}); recorded in {args.index}.json")
        if args.kind == "hnsw" and tuning["queries_from"] != "given":
            print("warning: gallery rows as tuning queries overstate an hnsw index's recall on new queries (a "
                  "gallery row's node links straight to its neighbours); pass --tune-queries FEATURES with real "
                  "queries", file=sys.stderr)
    return 0


def _query(args: argparse.Namespace) -> int:
    if bool(args.images) == bool(args.features):
        raise IgoasError("give the queries either as images (IMAGE ...) or as a features file (--features FILE)")
    if args.draw:
        check_output(args.draw)
        figure_format(args.draw)
    if args.topk_out:
        check_output(args.topk_out)
    index = GalleryIndex.load(args.index)
    paths, pids, camids, embeddings = (_saved_queries(args, index) if args.features else _embedded_queries(args, index))
    result = index.search(embeddings, topk=args.topk)
    distances = distance_from_similarity(result.scores, args.metric)
    if args.topk_out:
        _write_topk(args.topk_out, result, pids, camids)
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
    if args.topk_out:
        print(f"wrote the top-{result.indices.shape[1]} indices and distances to {args.topk_out}")
    if args.features and not args.summary_only and (np.asarray(pids) >= 0).any():
        print(_protocol_line(index, result, pids, camids, args.topk))
    print(_summary(index, result, pids, args.topk))
    return 0


def topk_distances(result: Any) -> np.ndarray:
    """Squared Euclidean distances of unit vectors, 2 - 2 score (the evaluation's), inf where a slot is empty."""
    return np.where(result.indices >= 0, distance_from_similarity(result.scores), np.inf).astype(np.float32)


def _write_topk(path: str, result: Any, pids: Any, camids: Any) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, indices=result.indices, distances=topk_distances(result),
             q_pids=np.asarray(pids, np.int64), q_camids=np.asarray(camids, np.int64))
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def _protocol_line(index: Any, result: Any, pids: Any, camids: Any, topk: int) -> str:
    """CMC / mAP / mINP of the top-K lists under the evaluation protocol (evaluate_topk), with how exact they are."""
    try:
        scored = evaluate_topk(result.indices, topk_distances(result), pids, index.pids, camids, index.camids,
                               max_rank=min(topk, 10))
    except IgoasError as err:
        return f"protocol metrics not computed: {err}"
    ranks = ", ".join(f"R{r} {100 * float(scored.cmc[r - 1]):.1f}" for r in (1, 5, 10) if r <= len(scored.cmc))
    line = (f"evaluation protocol on the top {topk} (same-identity same-camera gallery entries dropped): {ranks}, "
            f"mAP {100 * scored.mAP:.1f} %, mINP {100 * scored.mINP:.1f} %")
    if scored.exact:
        return line + "; exact: every true match lies within the top " + str(topk)
    return (line + f"; lower bounds: {scored.num_incomplete} quer{'y has' if scored.num_incomplete == 1 else 'ies have'}"
            f" true matches beyond the top {topk} (mAP at most {100 * scored.mAP_upper:.1f} %); raise --topk "
            "for exact numbers")


def _summary(index: Any, result: Any, query_pids: Any, topk: int) -> str:
    """One closing line: how many queries against how large a gallery, and for the queries
    of known identity how many find it first and within the top K (the whole gallery is
    searched, same-camera images included: not the evaluation protocol's R1)."""
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

