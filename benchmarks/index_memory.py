"""Peak memory of `igoas search build` from a shard folder, against the size of the float gallery.

Writes N x D random unit vectors (float32, seed 0) in the layout `igoas extract --shards`
writes (shard-00000.npy/.json ... and manifest.json, read back by `open_sharded`), then runs
in fresh processes, each reporting its own peak RSS (`resource.getrusage`, ru_maxrss):

- baseline: imports what the build imports (igoas's CLI, numpy, faiss) and nothing else;
- shards:   `igoas search build SHARD_DIR --index OUT --kind KIND ...`;
- merged:   the same build from one features file holding the whole gallery (unless --no-merged),
            for contrast.

"added" is a build's peak minus the baseline's: what building costs beyond the imports. For
the trained kinds it is bounded by the index, one --add-chunk of rows (and its unit-length
copy), the training sample (and FAISS's training buffers) and the per-row metadata (paths,
ids), not by the float gallery.

    python benchmarks/index_memory.py [--rows 200000] [--dim 128] [--kind ivf_pq] [--pq-m 16] ...

Prints one JSON line.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from igoas.deploy.sharded_extraction import open_sharded
from igoas.retrieval import save_features

SHARD_SIZE = 4096
BASELINE = ("import resource, numpy, faiss, igoas.cli, igoas.commands.search; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
BUILD = ("import resource, sys; from igoas.cli import main; code = main(sys.argv[1:]); "
         "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")


def write_random_shards(folder: str | os.PathLike, rows: int, dim: int, shard_size: int = SHARD_SIZE,
                        seed: int = 0) -> Path:
    """N x D random unit rows as a finished sharded extraction (what `open_sharded` reads),
    written one shard at a time; paths `g/0000000.jpg`..., random ids and cameras."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    common = {"format": "igoas-feature-shards", "format_version": 1, "checkpoint": "random.pth",
              "checkpoint_sha256": "0" * 64, "image_list": "0" * 64, "image_count": rows, "source": "random",
              "settings": {"shard_size": shard_size, "batch_size": 64, "threads": 1, "precision": "fp32",
                           "backend": "torch", "device_type": "cpu"}}
    records = []
    for index, start in enumerate(range(0, rows, shard_size)):
        stop = min(start + shard_size, rows)
        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        name = f"shard-{index:05d}"
        np.save(folder / f"{name}.npy", block)
        sha = hashlib.sha256((folder / f"{name}.npy").read_bytes()).hexdigest()
        document = {**common, "index": index, "start": start, "stop": stop, "embedding_dim": dim, "sha256": sha,
                    "paths": [f"g/{i:07d}.jpg" for i in range(start, stop)],
                    "pids": rng.integers(0, max(rows // 20, 1), stop - start).tolist(),
                    "camids": rng.integers(0, 6, stop - start).tolist(), "skipped": {}}
        (folder / f"{name}.json").write_text(json.dumps(document), encoding="utf-8")
        records.append({"index": index, "name": name, "embeddings": f"{name}.npy", "metadata": f"{name}.json",
                        "start": start, "stop": stop, "rows": stop - start, "skipped": 0, "sha256": sha,
                        "embedding_dim": dim})
    manifest = {**common, "rows": rows, "skipped": 0, "embedding_dim": dim, "model_spec": {}, "preprocess": {},
                "shards": records}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def _peak_kib(code: str, *argv: str) -> int:
    """Run `python -c code argv...` in a fresh process; its last stdout line is its ru_maxrss (KiB on Linux)."""
    done = subprocess.run([sys.executable, "-c", code, *argv], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv) or 'baseline'} failed:\n{done.stdout}\n{done.stderr}")
    return int(done.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    shards = write_random_shards(work / "shards", args.rows, args.dim)
    options = ["--kind", args.kind, "--add-chunk", str(args.add_chunk)]
    for flag, value in (("--pq-m", args.pq_m), ("--nlist", args.nlist), ("--train-size", args.train_size)):
        if value is not None:
            options += [flag, str(value)]
    gallery_bytes = args.rows * args.dim * 4
    baseline = _peak_kib(BASELINE) * 1024
    started = time.perf_counter()
    from_shards = _peak_kib(BUILD, "search", "build", str(shards), "--index", str(work / "shards.faiss"), *options)
    seconds = time.perf_counter() - started
    side = json.loads((work / "shards.faiss.json").read_text(encoding="utf-8"))
    result: dict[str, Any] = {
        "benchmark": "index_memory", "rows": args.rows, "dim": args.dim, "kind": args.kind,
        "options": side["options"], "train_size": side["build"].get("train_size"), "add_chunk": args.add_chunk,
        "gallery_float_MiB": round(gallery_bytes / 2**20, 1),
        "index_file_MiB": round((work / "shards.faiss").stat().st_size / 2**20, 1),
        "baseline_peak_MiB": round(baseline / 2**20, 1),
        "shards_peak_MiB": round(from_shards * 1024 / 2**20, 1),
        "shards_added_MiB": round((from_shards * 1024 - baseline) / 2**20, 1),
        "shards_added_over_gallery": round((from_shards * 1024 - baseline) / gallery_bytes, 3),
        "shards_build_s": round(seconds, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.merged:
        merged = work / "merged.npz"
        save_features(merged, open_sharded(shards).to_features())
        from_merged = _peak_kib(BUILD, "search", "build", str(merged), "--index", str(work / "merged.faiss"),
                                *options)
        result.update(merged_peak_MiB=round(from_merged * 1024 / 2**20, 1),
                      merged_added_MiB=round((from_merged * 1024 - baseline) / 2**20, 1),
                      merged_added_over_gallery=round((from_merged * 1024 - baseline) / gallery_bytes, 3))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--kind", default="ivf_pq", choices=["flat", "ivf", "ivf_pq", "hnsw"])
    parser.add_argument("--pq-m", type=int, default=16, help="ivf_pq sub-quantisers (default 16)")
    parser.add_argument("--nlist", type=int)
    parser.add_argument("--train-size", type=int)
    parser.add_argument("--add-chunk", type=int, default=65536)
    parser.add_argument("--no-merged", dest="merged", action="store_false",
                        help="skip the contrast build from one merged features file")
    parser.add_argument("--work", help="folder for the shards and indexes (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.kind != "ivf_pq":
        args.pq_m = None
    if args.work:
        print(json.dumps(measure(args, Path(args.work))))
    else:
        with tempfile.TemporaryDirectory() as work:
            print(json.dumps(measure(args, Path(work))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
