"""Market-1501 and every copy in its layout (`bounding_box_train`, `query`,
`bounding_box_test` with names `PPPP_cC...`): DukeMTMC-reID, Occluded-Duke, CUHK03-NP,
users' own folders and the synthetic set are all read by `read_market_layout`."""
from __future__ import annotations

from pathlib import Path

from igoas.data.base import SAME_CAMERA, NamePattern, ReIDDataset, make_samples, raise_if_unparsed, relabel, scan_folder
from igoas.data.layout import locate_root
from igoas.utils.errors import DatasetError

MARKET_SPLITS = ("bounding_box_train", "query", "bounding_box_test")
# The community's parsing (torchreid, fast-reid): identity, then `_c` and the 1-based camera.
MARKET_PATTERN = NamePattern(r"(?P<pid>-?\d+)_c(?P<cam>\d+)", "PPPP_cCsS_FFFFFF_BB.jpg (identity, camera, ...)",
                             "0002_c1s1_000451_03.jpg")
MARKET_CANDIDATES = ("market1501/Market-1501-v15.09.15", "Market-1501-v15.09.15", "market1501", "Market", "")
PUBLISHED = {"train": (751, 12936), "query": (750, 3368), "gallery": (751, 15913)}


def read_market_layout(
    name: str,
    folder: Path,
    pattern: NamePattern = MARKET_PATTERN,
    *,
    strict: bool = True,
    distractor_pids: frozenset[int] = frozenset(),
    extra_gallery: tuple[Path, ...] = (),
    protocol_info: dict | None = None,
) -> ReIDDataset:
    """Read the three Market-layout folders under `folder`.

    Identity -1 (junk boxes) is dropped everywhere, and `distractor_pids` from the training
    split (they are never classes); training identities are relabelled to 0..N-1 while query
    and gallery keep the numbers of the names, which is what matches them to each other.
    """
    parsed, unparsed = {}, []
    for split, sub in zip(("train", "query", "gallery"), MARKET_SPLITS):
        parsed[split], bad = scan_folder(folder / sub, pattern)
        unparsed += bad
    for extra in extra_gallery:
        more, bad = scan_folder(extra, pattern)
        parsed["gallery"] += more
        unparsed += bad
    raise_if_unparsed(name, unparsed, strict)
    return ReIDDataset(
        name=name,
        root=str(folder),
        train=relabel(s for s in make_samples(parsed["train"]) if s.pid not in distractor_pids),
        query=make_samples(parsed["query"]),
        gallery=make_samples(parsed["gallery"]),
        protocol_info=dict(protocol_info or SAME_CAMERA),
        distractor_pids=distractor_pids,
        unparsed_files=unparsed,
    )


def market1501(root: str | Path, *, strict: bool = True, distractors_500k: bool = False) -> ReIDDataset:
    """Market-1501: 6 cameras; identity 0000 is a distractor kept in the gallery.

    `distractors_500k` adds the optional `images/` folder of 500k distractors to the gallery.
    """
    folder = locate_root(root, "market1501", MARKET_CANDIDATES, MARKET_SPLITS)
    extra = (folder / "images",) if distractors_500k else ()
    if distractors_500k and not extra[0].is_dir():
        raise DatasetError(f"market1501: distractors_500k=True but {extra[0]} does not exist; "
                           "unpack the 500k distractor images there or turn the option off.")
    return read_market_layout("market1501", folder, strict=strict, distractor_pids=frozenset({0}),
                              extra_gallery=extra)
