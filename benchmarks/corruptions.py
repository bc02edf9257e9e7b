"""CPU cost of the corruption benchmark: milliseconds per 128x64 image (Market-1501's and
the synthetic set's size) for each of the 20 corruptions, averaged over the 5 severities,
and what that implies for the full grid at synthetic and Market-1501 scale.

The reference, measured in the same run, is decoding + resizing + normalising one image
(what the clean evaluation pays per image); ratios are against it. The projections are
extrapolations from these per-image costs (corruption only, single core; the
embedding's cost comes on top) and say so in their keys. Prints one JSON line.

    python benchmarks/corruptions.py [--images 4] [--repeat 1]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from igoas.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from igoas.data import build_dataset, render_synthetic
from igoas.imaging.images import load_image
from igoas.imaging.preprocess import Preprocess

# (queries, gallery images) of the evaluation sets the projections are for
SCALES = {"synthetic_small": (95, 312), "market1501": (3368, 15913)}


def best_ms(function, repeat: int) -> float:
    """Fastest of `repeat` calls (after one warm-up call), in milliseconds."""
    function()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="synthetic 128x64 images measured")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        render_synthetic(folder, seed=0, size="tiny")
        paths = [sample.path for sample in build_dataset("synthetic", Path(folder)).query[:args.images]]
        images = [load_image(path).permute(1, 2, 0).numpy() for path in paths]
        preprocess = Preprocess(128, 64)  # ImageNet mean and std
        reference = float(np.mean([best_ms(lambda p=p: preprocess([p]), args.repeat) for p in paths]))
        per_corruption = {
            name: float(np.mean([best_ms(lambda i=i, s=s: corrupt(i, name, s, 0), args.repeat)
                                 for i in images for s in SEVERITIES]))
            for name in CORRUPTIONS}
    grid_ms = sum(per_corruption.values()) * len(SEVERITIES)  # one image under every (corruption, severity)
    projections = {}
    for scale, (queries, gallery) in SCALES.items():
        projections[scale] = {
            "estimated_core_hours_query_setting": queries * grid_ms / 3.6e6,
            "estimated_core_hours_query_and_both_settings": (queries + gallery) * grid_ms / 3.6e6,
        }
    print(json.dumps({
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "images": len(paths), "image_size": list(images[0].shape[:2]),
        "reference_decode_resize_ms": reference,
        "corrupt_ms_mean_over_severities": per_corruption,
        "ratio_to_reference": {name: ms / reference for name, ms in per_corruption.items()},
        "full_grid_ms_per_image": grid_ms,
        "projections_from_per_image_cost": projections,
    }))


if __name__ == "__main__":
    main()
