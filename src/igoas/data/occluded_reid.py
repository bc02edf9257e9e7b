"""Occluded-ReID: 200 identities x (5 occluded + 5 whole-body) images in
`occluded_body_images/` and `whole_body_images/` (per-identity folders or flattened).

Two protocols, chosen by `split` and recorded in `protocol_info`:
- "standard" (most later papers): train elsewhere (Market-1501); every occluded image is
  a query, every whole-body image the gallery;
- "half" (the IGOAS authors' code): identities 88-187 (both kinds) train, the other 100
  are tested the standard way.
Queries are camera 0 and the gallery camera 1, so the same-camera filter removes nothing.
"""
from __future__ import annotations

from pathlib import Path

from igoas.data.base import NamePattern, ReIDDataset, read_cross_set, relabel
from igoas.data.layout import locate_root
from igoas.utils.errors import DatasetError

CANDIDATES = ("occluded-reid/Occluded_REID", "Occluded_REID", "occluded-reid", "OccludedREID", "occluded_reid", "")
REQUIRED = ("occluded_body_images", "whole_body_images")
PATTERN = NamePattern(r"(?P<pid>\d+)[_.]", "PPP_KK.tif (identity, image)", "001_01.tif")
HALF_SPLIT_TRAIN_PIDS = range(88, 188)
SPLITS = ("standard", "half")
PUBLISHED = {
    "standard": {"query": (200, 1000), "gallery": (200, 1000)},
    "half": {"train": (100, 1000), "query": (100, 500), "gallery": (100, 500)},
}


def occluded_reid(root: str | Path, *, split: str = "standard", strict: bool = True) -> ReIDDataset:
    """Occluded-ReID under the "standard" or the authors' "half" protocol."""
    if split not in SPLITS:
        raise DatasetError(f"occluded_reid: split {split!r} is not one of {SPLITS}.")
    folder = locate_root(root, "occluded_reid", CANDIDATES, REQUIRED)
    protocol = {"protocol": "cross_set", "occluded_reid_split": split,
                "train_source": "market1501" if split == "standard" else "occluded_reid"}
    dataset = read_cross_set("occluded_reid", folder, folder / REQUIRED[0], folder / REQUIRED[1],
                             PATTERN, strict, protocol)
    if split == "half":
        in_train = set(HALF_SPLIT_TRAIN_PIDS)
        dataset.train = relabel(s for s in dataset.query + dataset.gallery if s.pid in in_train)
        dataset.query = [s for s in dataset.query if s.pid not in in_train]
        dataset.gallery = [s for s in dataset.gallery if s.pid not in in_train]
    return dataset
