"""P-DukeMTMC-reID: `{train,test}/{occluded_body_images,whole_body_images}/PID/PID_CAM_FRAME.jpg`.

Training uses both kinds of both parts of `train/`; the test queries are the occluded
images (camera 0) and the gallery the whole-body images (camera 1), like the authors'
reader, so the same-camera filter removes nothing.
"""
from __future__ import annotations

from pathlib import Path

from igoas.data.base import NamePattern, ReIDDataset, make_samples, raise_if_unparsed, relabel, scan_folder
from igoas.data.layout import locate_root

CANDIDATES = ("P-DukeMTMC-reid", "P-DukeMTMC-reID", "p-dukemtmc-reid", "p_dukemtmc", "")
KINDS = ("occluded_body_images", "whole_body_images")  # camera 0, camera 1
REQUIRED = tuple(f"{part}/{kind}" for part in ("train", "test") for kind in KINDS)
PATTERN = NamePattern(r"(?P<pid>\d+)_", "PID_CAM_FRAME.jpg", "0005_2_046985.jpg")
PUBLISHED = {"train": (665, 12927), "query": (634, 2163), "gallery": (634, 9053)}  # (confirm)


def p_dukemtmc(root: str | Path, *, strict: bool = True) -> ReIDDataset:
    """P-DukeMTMC-reID, cross-set protocol inside one dataset."""
    folder = locate_root(root, "p_dukemtmc", CANDIDATES, REQUIRED)
    parsed, unparsed = {}, []
    for path in REQUIRED:
        parsed[path], bad = scan_folder(folder / path, PATTERN, recursive=True)
        unparsed += bad
    raise_if_unparsed("p_dukemtmc", unparsed, strict)
    train = [s for camid, kind in enumerate(KINDS) for s in make_samples(parsed[f"train/{kind}"], camid=camid)]
    return ReIDDataset(
        name="p_dukemtmc",
        root=str(folder),
        train=relabel(train),
        query=make_samples(parsed[f"test/{KINDS[0]}"], camid=0),
        gallery=make_samples(parsed[f"test/{KINDS[1]}"], camid=1),
        protocol_info={"protocol": "cross_set", "train_source": "p_dukemtmc"},
        unparsed_files=unparsed,
    )
