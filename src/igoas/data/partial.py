"""Partial-REID and Partial-iLIDS: test-only sets (train on Market-1501) whose queries are
partial bodies and gallery whole bodies; queries camera 0, gallery camera 1."""
from __future__ import annotations

import logging
from pathlib import Path

from igoas.data.base import CROSS_SET, NamePattern, ReIDDataset, read_cross_set
from igoas.data.layout import locate_root
from igoas.utils.errors import DatasetError

LOG = logging.getLogger(__name__)

PARTIAL_REID_CANDIDATES = ("partial-reid/PartialREID", "PartialREID", "partial-reid", "Partial-REID", "partial_reid", "")
# Query folders of Partial-REID: the occluded full frames (what the authors' reader uses)
# or the hand-cropped visible parts of the same frames.
PARTIAL_REID_QUERY_DIRS = ("occluded_body_images", "partial_body_images")
PARTIAL_REID_PATTERN = NamePattern(r"(?P<pid>\d+)[_.]", "PPP_KK.jpg (identity, image)", "001_01.jpg")
PARTIAL_ILIDS_CANDIDATES = ("partial-ilids/Partial_iLIDS", "Partial_iLIDS", "partial-ilids", "partial_ilids", "")
PARTIAL_ILIDS_PATTERN = NamePattern(r"(?P<pid>\d+)[_.]", "PPP.jpg (identity)", "001.jpg")
PUBLISHED_PARTIAL_REID = {"query": (60, 300), "gallery": (60, 300)}
PUBLISHED_PARTIAL_ILIDS = {"query": (119, 119), "gallery": (119, 119)}


def partial_reid(root: str | Path, *, query_folder: str | None = None, strict: bool = True) -> ReIDDataset:
    """Partial-REID: 60 identities x (5 occluded or partial + 5 whole-body) images.

    `query_folder="occluded_body_images"` (the authors' reader): the occluded frames as
    they were taken, occluder included; `"partial_body_images"`: the same frames cropped by
    hand to the visible body part, which most later partial-ReID papers use. Left unset, it
    is the authors' folder when the copy has both, else whichever one the copy has (many
    copies ship only one); `protocol_info["partial_reid_query_folder"]` records the folder
    used. The gallery is `whole_body_images` either way.
    """
    if query_folder is not None and query_folder not in PARTIAL_REID_QUERY_DIRS:
        raise DatasetError(f"partial_reid: query_folder {query_folder!r} is not one of {PARTIAL_REID_QUERY_DIRS}.")
    folder = locate_root(root, "partial_reid", PARTIAL_REID_CANDIDATES, ("whole_body_images",))
    present = [d for d in PARTIAL_REID_QUERY_DIRS if (folder / d).is_dir()]
    wanted = query_folder or (present[0] if present else PARTIAL_REID_QUERY_DIRS[0])
    if wanted not in present:
        others = [d for d in present if d != wanted]
        hint = (f" It has {others[0]}/: choose it with query_folder={others[0]!r} (from the command line "
                f"`-o query_folder={others[0]}`; in a run config "
                f"`data.target_options: {{partial_reid: {{query_folder: {others[0]}}}}}`), or leave the option unset."
                if others else f" Put the dataset's {wanted}/ (or {PARTIAL_REID_QUERY_DIRS[1]}/) there.")
        raise DatasetError(f"partial_reid: {folder} has whole_body_images/ but no {wanted}/.{hint}")
    if query_folder is None and wanted != PARTIAL_REID_QUERY_DIRS[0]:
        LOG.info("partial_reid: %s has no %s/; the queries are %s/ (recorded in protocol_info)",
                 folder, PARTIAL_REID_QUERY_DIRS[0], wanted)
    return read_cross_set("partial_reid", folder, folder / wanted, folder / "whole_body_images",
                          PARTIAL_REID_PATTERN, strict, {**CROSS_SET, "partial_reid_query_folder": wanted})


def partial_ilids(root: str | Path, *, strict: bool = True) -> ReIDDataset:
    """Partial-iLIDS: 119 identities, one partial probe and one whole gallery image each."""
    folder = locate_root(root, "partial_ilids", PARTIAL_ILIDS_CANDIDATES, ("Probe", "Gallery"))
    return read_cross_set("partial_ilids", folder, folder / "Probe", folder / "Gallery",
                          PARTIAL_ILIDS_PATTERN, strict)
