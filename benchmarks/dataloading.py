"""Images per second of decoding + training transforms at 384x128, as the training loader
delivers them (2 worker processes by default), for both decoders (PIL, torchvision.io) and
two source sizes (Market-1501's 128x64 and a larger 256x128).

The reference, measured in the same run, is PIL decoding with the same transforms in the
main process (no workers); ratios are against it. The goal is >= 400 images/s with 2
workers on a 2-core machine, so the data path never limits a GPU step. Prints one JSON line.

    python benchmarks/dataloading.py [--images 512] [--repeat 2] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch

from igoas.data import build_dataset, build_train_loader, render_synthetic

GOAL_IMAGES_PER_SECOND = 400
SOURCES = {"128x64": (128, 64), "256x128": (256, 128)}


def images_per_second(samples: list, backend: str, workers: int, repeat: int, batch_size: int = 64) -> float:
    """Best of `repeat` full passes over `samples` (after one warm-up pass that starts the workers)."""
    loader = build_train_loader(samples, batch_size, num_workers=workers, seed=0, height=384, width=128,
                                persistent_workers=workers > 0)
    loader.dataset.backend = backend
    best = 0.0
    for epoch in range(repeat + 1):
        loader.sampler.set_epoch(epoch)
        start, count = time.perf_counter(), 0
        for batch in loader:
            count += len(batch["pid"])
        if epoch:  # the first pass only warms up
            best = max(best, count / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="images per source size")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torchvision.io's notice, once per image
    torch.set_num_threads(1)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in SOURCES.items():
            root = render_synthetic(Path(tmp) / name, size="small", seed=0, image_size=size)
            samples = build_dataset("synthetic", root).train[: args.images]
            runs = {"reference_pil_main_process": ("pil", 0)}
            runs.update({f"{b}_{args.workers}_workers": (b, args.workers) for b in ("pil", "auto")})
            results[name] = {key: round(images_per_second(samples, b, w, args.repeat), 1)
                             for key, (b, w) in runs.items()}
    ratios = {name: {key: round(v / r["reference_pil_main_process"], 2) for key, v in r.items()
                     if not key.startswith("reference")} for name, r in results.items()}
    best_with_workers = min(max(v for k, v in r.items() if not k.startswith("reference")) for r in results.values())
    print(json.dumps({
        "benchmark": "dataloading",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "output_size": [384, 128],
        "workers": args.workers,
        "images_per_source": args.images,
        "images_per_second": results,
        "ratio_to_reference": ratios,
        "goal_images_per_second": GOAL_IMAGES_PER_SECOND,
        "meets_goal": best_with_workers >= GOAL_IMAGES_PER_SECOND,
    }))


if __name__ == "__main__":
    main()
