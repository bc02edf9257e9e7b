"""Partial-REID and Partial-iLIDS: test-only sets (train on Market-1501) whose queries are
partial bodies and gallery whole bodies; queries camera 0, gallery camera 1."""
from __future__ import annotations

from pathlib import Path

from igoas.data.base import NamePattern, ReIDDataset, read_cross_set
from igoas.data.layout import locate_root
from igoas.errors import DatasetError

PARTIAL_REID_CANDIDATES = ("partial-reid/PartialREID", "PartialREID", "partial-reid", "Partial-REID", "partial_reid", "")
PARTIAL_REID_QUERY_DIRS = ("partial_body_images", "occluded_body_images")
PARTIAL_REID_PATTERN = NamePattern(r"(?P<pid>\d+)[_.]", "PPP_KK.jpg (identity, image)", "001_01.jpg")
PARTIAL_ILIDS_CANDIDATES = ("partial-ilids/Partial_iLIDS", "Partial_iLIDS", "partial-ilids", "partial_ilids", "")
PARTIAL_ILIDS_PATTERN = NamePattern(r"(?P<pid>\d+)[_.]", "PPP.jpg (identity)", "001.jpg")
PUBLISHED_PARTIAL_REID = {"query": (60, 300), "gallery": (60, 300)}
PUBLISHED_PARTIAL_ILIDS = {"query": (119, 119), "gallery": (119, 119)}


def partial_reid(root: str | Path, *, strict: bool = True) -> ReIDDataset:
    """Partial-REID: 60 identities x (5 partial + 5 whole); the partial folder may be named
    `partial_body_images` or `occluded_body_images` depending on the copy."""
    folder = locate_root(root, "partial_reid", PARTIAL_REID_CANDIDATES, ("whole_body_images",))
    query_dir = next((folder / d for d in PARTIAL_REID_QUERY_DIRS if (folder / d).is_dir()), None)
    if query_dir is None:
        raise DatasetError(f"partial_reid: {folder} has whole_body_images/ but neither "
                           f"{' nor '.join(PARTIAL_REID_QUERY_DIRS)}/; put the partial images in one of them.")
    return read_cross_set("partial_reid", folder, query_dir, folder / "whole_body_images",
                          PARTIAL_REID_PATTERN, strict)


def partial_ilids(root: str | Path, *, strict: bool = True) -> ReIDDataset:
    """Partial-iLIDS: 119 identities, one partial probe and one whole gallery image each."""
    folder = locate_root(root, "partial_ilids", PARTIAL_ILIDS_CANDIDATES, ("Probe", "Gallery"))
    return read_cross_set("partial_ilids", folder, folder / "Probe", folder / "Gallery",
                          PARTIAL_ILIDS_PATTERN, strict)
