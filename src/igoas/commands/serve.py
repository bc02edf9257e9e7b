"""`igoas serve CKPT --gallery INDEX_FEATURES_OR_DIR`: a local web page to search the gallery."""
from __future__ import annotations

import argparse
import sys

from igoas.commands.arguments import port_number
from igoas.deploy.serve import build_service
from igoas.utils.errors import IgoasError
from igoas.utils.extras import missing_module_message, optional

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="igoas checkpoint (.pth) that embeds the queries")
    parser.add_argument("--gallery", required=True,
                        help="an index from `igoas search build`, a features file from `igoas extract`, a folder of "
                             "images, or a dataset root with --dataset (images are embedded once and cached)")
    parser.add_argument("--dataset", help="dataset name (synthetic, market1501, occluded_duke, ...): offer its query "
                                          "split and, when --gallery is its root, search its gallery split")
    parser.add_argument("--root",
                        help="with --dataset: the dataset's folder when --gallery is an index or features file")
    parser.add_argument("--queries", help="a folder of query images to choose from, or with --dataset a split "
                                          "name (default: query)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=port_number, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--cache", metavar="DIR", help="where gallery embeddings are cached "
                                                       "(default: $XDG_CACHE_HOME/igoas/deploy/serve)")
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="fp32", choices=["auto", "fp32", "tf32", "bf16", "fp16"],
                        help="inference precision (default fp32, as igoas eval); auto picks bf16 where it is native")
    parser.add_argument("--backend", default="pytorch", choices=["pytorch", "openvino", "auto"],
                        help="CPU inference back end for the embeddings, as for `igoas extract`")
    parser.add_argument("--no-progress", action="store_true", help="hide the embedding progress bar")


def run(args: argparse.Namespace) -> int:
    uvicorn = optional("uvicorn", "the web page")
    try:
        from igoas.deploy.serve.app import create_app  # FastAPI: the serve extra, so --help works without it
    except ImportError as err:
        raise IgoasError(missing_module_message(err, "the web page") or str(err)) from None

    service = build_service(args.checkpoint, args.gallery, dataset=args.dataset, root=args.root,
                            queries=args.queries, cache_dir=args.cache, device=args.device,
                            precision=args.precision, backend=args.backend, progress=not args.no_progress)
    if args.host not in LOCAL_HOSTS:
        print(f"igoas serve: warning: listening on {args.host}, so other machines can reach the page; "
              "it has no login", file=sys.stderr)
    about = service.describe()
    print(f"[serve] {about['model']} on {service.model.runtime.description}, gallery of {about['gallery']} images; "
          f"open http://{args.host}:{args.port}/")
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="warning")
    return 0
