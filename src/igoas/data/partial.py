"""Partial-REID and Partial-iLIDS: test-only sets (train on Market-1501) whose queries are
partial bodies and gallery whole bodies; queries camera 0, gallery camera 1."""
from __future__ import annotations

from pathlib import Path

from igoas.data.base import CROSS_SET, NamePattern, ReIDDataset, read_cross_set
from igoas.data.layout import locate_root
from igoas.errors import DatasetError

PARTIAL_REID_CANDIDATES = ("partial-reid/PartialREID", "PartialREID", "partial-reid", "Partial-REID", "partial_reid", "")
# Query folders of Partial-REID: the occluded full frames (what the authors' reader uses)
# or the hand-cropped visible parts of the same frames.
PARTIAL_REID_QUERY_DIRS = ("occluded_body_images", "partial_body_images")
PARTIAL_REID_PATTERN = NamePattern(r"(?P<pid>\d+)[_.]", "PPP_KK.jpg (identity, image)", "001_01.jpg")
PARTIAL_ILIDS_CANDIDATES = ("partial-ilids/Partial_iLIDS", "Partial_iLIDS", "partial-ilids", "partial_ilids", "")
PARTIAL_ILIDS_PATTERN = NamePattern(r"(?P<pid>\d+)[_.]", "PPP.jpg (identity)", "001.jpg")
PUBLISHED_PARTIAL_REID = {"query": (60, 300), "gallery": (60, 300)}
PUBLISHED_PARTIAL_ILIDS = {"query": (119, 119), "gallery": (119, 119)}


def partial_reid(root: str | Path, *, query_folder: str = "occluded_body_images", strict: bool = True) -> ReIDDataset:
    """Partial-REID: 60 identities x (5 occluded or partial + 5 whole-body) images.

    `query_folder="occluded_body_images"` (default, the authors' reader): the occluded
    frames as they were taken, occluder included; `"partial_body_images"`: the same
    frames cropped by hand to the visible body part, which most later partial-ReID
    papers use. The gallery is `whole_body_images` either way.
    """
    if query_folder not in PARTIAL_REID_QUERY_DIRS:
        raise DatasetError(f"partial_reid: query_folder {query_folder!r} is not one of {PARTIAL_REID_QUERY_DIRS}.")
    folder = locate_root(root, "partial_reid", PARTIAL_REID_CANDIDATES, ("whole_body_images",))
    query_dir = folder / query_folder
    if not query_dir.is_dir():
        others = [d for d in PARTIAL_REID_QUERY_DIRS if d != query_folder and (folder / d).is_dir()]
        hint = (f" It has {others[0]}/: pass query_folder={others[0]!r} (data.target_options or data.options) "
                "to use it." if others else f" Put the dataset's {query_folder}/ there.")
        raise DatasetError(f"partial_reid: {folder} has whole_body_images/ but no {query_folder}/.{hint}")
    return read_cross_set("partial_reid", folder, query_dir, folder / "whole_body_images",
                          PARTIAL_REID_PATTERN, strict, {**CROSS_SET, "partial_reid_query_folder": query_folder})


def partial_ilids(root: str | Path, *, strict: bool = True) -> ReIDDataset:
    """Partial-iLIDS: 119 identities, one partial probe and one whole gallery image each."""
    folder = locate_root(root, "partial_ilids", PARTIAL_ILIDS_CANDIDATES, ("Probe", "Gallery"))
    return read_cross_set("partial_ilids", folder, folder / "Probe", folder / "Gallery",
                          PARTIAL_ILIDS_PATTERN, strict)
