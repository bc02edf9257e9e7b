"""Corrupted evaluation images, produced in the data-loading workers.

Each item is one (split, image, corruption, severity) job: the image is decoded at its
stored size, corrupted (seeded per image, `igoas.corruptions.apply.image_seed`), then
resized and normalised by the checkpoint's `Preprocess`, as the benchmark corrupts
before resizing. With a cache folder, corrupted images are kept as lossless PNG files
per (corruption, severity, seed), so a second checkpoint or a rerun skips the CPU work.
A cached file's name carries a digest of its source file's identity (absolute path, size,
modification time), so another query set with the same file names, or an edited image,
never reads another image's corruption; the random setting's folder carries a digest of
the corruptions and severities it draws from.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from igoas.corruptions.apply import CORRUPTIONS, MIN_SIDE, SEVERITIES, corrupt, image_seed, random_corruption
from igoas.imaging.images import load_image
from igoas.utils.errors import IgoasError
from igoas.utils.fileio import atomic_write, file_identity

CLEAN = "clean"
RANDOM = "random"  # a corruption and severity drawn per image


@dataclass(frozen=True)
class Job:
    """One image to embed: `corruption` is a benchmark name, CLEAN, or RANDOM (severity 0 for both)."""

    split: str
    index: int
    corruption: str
    severity: int


class CorruptedImages(torch.utils.data.Dataset):
    """`jobs` over `samples[split]`, as the dicts `embed` reads as prepared items (image, pid, camid, path, index)."""

    def __init__(self, samples: Mapping[str, Sequence[Any]], jobs: Sequence[Job], preprocess: Any, seed: int = 0,
                 cache_dir: str | Path | None = None, corruptions: Sequence[str] | None = None,
                 severities: Sequence[int] | None = None) -> None:
        self.samples, self.jobs, self.preprocess, self.seed = samples, list(jobs), preprocess, seed
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        # the grid the random setting draws from
        self.corruptions = tuple(corruptions) if corruptions else CORRUPTIONS
        self.severities = tuple(int(s) for s in severities) if severities else SEVERITIES

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, item: int) -> dict[str, Any]:
        job = self.jobs[item]
        sample = self.samples[job.split][job.index]
        pixels = self.pixels(job)
        image = self.preprocess(pixels)[0]  # uint8 pixels, prepared exactly as evaluation prepares them
        return {"image": image, "pid": sample.pid, "camid": sample.camid, "path": str(sample.path), "index": job.index}

    def pixels(self, job: Job) -> np.ndarray:
        """The job's H x W x 3 uint8 image: decoded, corrupted (or read back from the cache)."""

        sample = self.samples[job.split][job.index]
        if job.corruption == CLEAN:
            return load_image(sample.path).permute(1, 2, 0).numpy()
        cached = self._cache_path(job, Path(sample.path))
        if cached is not None and cached.is_file():
            return load_image(cached).permute(1, 2, 0).numpy()
        corruption, severity = job.corruption, job.severity
        if corruption == RANDOM:
            corruption, severity = random_corruption(self.seed, job.split, job.index, self.corruptions,
                                                     self.severities)
        image = load_image(sample.path).permute(1, 2, 0).numpy()
        corrupted = corrupt(image, corruption, severity, image_seed(self.seed, job.split, job.index, corruption,
                                                                    severity))
        if cached is not None:
            _write_png(cached, corrupted)
        return corrupted

    def _cache_path(self, job: Job, source: Path) -> Path | None:
        if self.cache_dir is None:
            return None
        if job.corruption == RANDOM:
            name = f"{RANDOM}/{_digest([list(self.corruptions), list(self.severities)])}"
        else:
            name = f"{job.corruption}/s{job.severity}"

        file_name = f"{job.index:06d}_{source.stem}_{_digest(file_identity(source))}.png"
        return self.cache_dir / name / f"seed{self.seed}" / job.split / file_name


def _digest(value: Any) -> str:
    """A short, stable digest of a JSON-able value (for cache names)."""
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:12]


def check_image_sizes(samples: Sequence[Any]) -> None:
    """IgoasError naming the first image smaller than the corruptions accept (reads headers only)."""
    from PIL import Image

    for sample in samples:
        with Image.open(sample.path) as image:
            width, height = image.size
        if min(width, height) < MIN_SIDE:
            raise IgoasError(f"{sample.path}: {width} x {height} pixels; the corruptions need images of at least "
                             f"{MIN_SIDE} x {MIN_SIDE} pixels (enlarge or leave out such images)")


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    atomic_write(path, lambda handle: Image.fromarray(image).save(handle, format="PNG", compress_level=1),
                 sync_folder=False)  # a cache of up to 100 images per query: rebuilt if lost
