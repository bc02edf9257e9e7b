"""Users' own data: a folder in the Market-1501 layout, or one list file per split.

List files (`train`, `query`, `gallery` with extension .txt or .csv, in ROOT or given
explicitly) hold one image per line: `path pid camid` separated by spaces, or CSV with an
optional `path,pid,camid` header. Paths are relative to the list file's folder (or
absolute); identities and cameras may be any labels (numbers or names):
- identity -1 is junk, as in Market-1501: its lines are dropped from every split (never a
  training class, never ranked);
- training identities become 0..N-1;
- query and gallery identities keep their numbers when all are integers, otherwise names
  are numbered jointly so a query still matches its gallery entries;
- camera labels become 0..C-1 over all splits.
With no camera column anywhere, the set is evaluated cross-set: queries camera 0,
gallery camera 1. A space-separated path may contain spaces: the labels are the fields
after the image file name (the field ending in .jpg, .png, ...).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

from igoas.data.base import (IMAGE_EXTENSIONS, INT64_MAX, SAME_CAMERA, ReIDDataset, Sample, UnparsedFile,
                             raise_if_unparsed, read_list_file)
from igoas.data.layout import locate_root
from igoas.data.market1501 import MARKET_SPLITS, read_market_layout
from igoas.utils.errors import DatasetError

SPLITS = ("train", "query", "gallery")
LIST_SUFFIXES = (".txt", ".csv")
LINE_PATTERN = "path pid camid (space-separated, or comma-separated in a .csv; camid optional when no line has one)"
LINE_EXAMPLE = "images/cam2/alice_0003.jpg alice 2"
LAYOUTS = ("auto", "market", "lists")



class Row(NamedTuple):
    """One list line: image path, identity label, camera label (None without a camera column)."""

    path: str
    pid: str
    cam: str | None
    line: int


def custom(root: str | Path, *, layout: str = "auto", train_list: str | Path | None = None,
           query_list: str | Path | None = None, gallery_list: str | Path | None = None,
           strict: bool = True) -> ReIDDataset:
    """Read a user's dataset in the Market-1501 layout or from list files (see module doc)."""
    if layout not in LAYOUTS:
        raise DatasetError(f"custom: layout {layout!r} is not one of {LAYOUTS}.")
    root = Path(root).expanduser()
    explicit = {"train": train_list, "query": query_list, "gallery": gallery_list}
    if layout == "auto":
        has_market = all((root / d).is_dir() for d in MARKET_SPLITS)
        has_lists = any(explicit.values()) or any((root / f"{split}{suffix}").is_file()
                                                  for split in SPLITS for suffix in LIST_SUFFIXES)
        if not has_market and not has_lists:
            # neither form is there: the folder check says what is missing and what is closest
            # (a misspelt split folder is the usual cause), and the list form is named too
            try:
                locate_root(root, "custom", ("",), MARKET_SPLITS)
            except DatasetError as err:
                raise DatasetError(f"{err}\nOr give list files train.txt (optional), query.txt and gallery.txt "
                                   f"(or .csv) in ROOT with lines `{LINE_PATTERN}`; see docs/datasets.md.") from None
        layout = "market" if has_market and not any(explicit.values()) else "lists"
    if layout == "market":
        folder = locate_root(root, "custom", ("",), MARKET_SPLITS)
        return read_market_layout("custom", folder, strict=strict)
    lists = {split: _find_list(root, split, explicit[split]) for split in SPLITS}
    return read_lists(root, lists, strict)


def _find_list(root: Path, split: str, given: str | Path | None) -> Path | None:
    if given is not None:
        path = Path(given).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise DatasetError(f"custom: the {split} list {path} does not exist.")
        return path
    found = [root / f"{split}{suffix}" for suffix in LIST_SUFFIXES if (root / f"{split}{suffix}").is_file()]
    if not found and split != "train":
        raise DatasetError(
            f"custom: no {split} list in {root}. Give either the Market-1501 layout "
            f"({', '.join(d + '/' for d in MARKET_SPLITS)}) or list files "
            f"train.txt (optional), query.txt and gallery.txt (or .csv) with lines `{LINE_PATTERN}`, "
            f"e.g. `{LINE_EXAMPLE}`; see docs/datasets.md."
        )
    return found[0] if found else None


def parse_list(path: Path) -> tuple[list[Row], list[UnparsedFile]]:
    """Rows of one list file; malformed lines are returned apart with their line number.

    Space-separated lines take the one or two fields after the image file name as labels,
    so a path may contain spaces with or without a camera column; CSV handles paths that
    do not end in an image extension.
    """
    rows, bad = [], []
    lines = read_list_file(path)
    is_csv = path.suffix.lower() == ".csv"
    records = csv.reader(lines) if is_csv else (_split_line(line) for line in lines)
    for number, fields in enumerate(records, start=1):
        fields = [f.strip() for f in fields]
        if not any(fields) or (number == 1 and is_csv and fields[:2] == ["path", "pid"]):
            continue
        if len(fields) not in (2, 3) or not all(fields):
            bad.append(UnparsedFile(f"{path}:{number}: {lines[number - 1]}", LINE_PATTERN, LINE_EXAMPLE))
            continue
        rows.append(Row(fields[0], fields[1], fields[2] if len(fields) == 3 else None, number))
    return rows, bad


def _split_line(line: str) -> list[str]:
    """`path pid [camid]` of a space-separated line whose path may hold spaces: with a
    camera column unless only the path without one ends like an image file."""
    with_camera = line.rsplit(None, 2)
    without_camera = line.rsplit(None, 1)
    if len(with_camera) == 3 and _is_image(without_camera[0]) and not _is_image(with_camera[0]):
        return without_camera
    return with_camera


def _is_image(path: str) -> bool:
    return path.strip().lower().endswith(IMAGE_EXTENSIONS)


def read_lists(root: Path, lists: dict[str, Path | None], strict: bool) -> ReIDDataset:
    """Build the dataset from parsed list files, numbering labels as the module doc says."""
    rows, unparsed = {}, []
    for split, path in lists.items():
        rows[split], bad = parse_list(path) if path else ([], [])
        unparsed += bad
    has_cams = {row.cam is not None for split_rows in rows.values() for row in split_rows}
    if has_cams == {True, False}:
        unparsed += _mixed_camera_lines(lists, rows)
        rows = {s: [r for r in rows[s] if r.cam is not None] for s in SPLITS}
    raise_if_unparsed("custom", unparsed, strict)
    cross_set = has_cams == {False}
    # Junk (-1) lines go before any numbering: they are neither classes nor ranked.
    rows = {s: [r for r in rows[s] if not _is_junk(r.pid)] for s in SPLITS}
    cameras = _numbering(row.cam for split_rows in rows.values() for row in split_rows if row.cam is not None)
    test_ids = [row.pid for s in ("query", "gallery") for row in rows[s]]
    test_numbering = None if all(_is_int(p) for p in test_ids) else _numbering(test_ids)
    samples = {}
    for split in SPLITS:
        base = lists[split].parent if lists[split] else root
        numbering = _numbering(row.pid for row in rows[split]) if split == "train" else test_numbering
        out = []
        for path, pid, cam, _ in rows[split]:
            label = numbering[pid] if numbering is not None else int(pid)
            camid = {"train": 0, "query": 0, "gallery": 1}[split] if cross_set else cameras[cam]
            out.append(Sample(str(base / path), label, camid))
        samples[split] = out
    protocol = {"protocol": "cross_set" if cross_set else SAME_CAMERA["protocol"]}
    if lists["train"] is None:  # evaluation only: a model trained on another set
        protocol["train_source"] = "another dataset"
    return ReIDDataset(name="custom", root=str(root), train=samples["train"], query=samples["query"],
                       gallery=samples["gallery"], protocol_info=protocol, unparsed_files=unparsed)


def _mixed_camera_lines(lists: dict[str, Path | None], rows: dict[str, list[Row]]) -> list[UnparsedFile]:
    """The lines that break "every line has a camera, or none does": the smaller group,
    which is the one that is usually wrong, each named by file and line."""
    every = [(split, row) for split in SPLITS for row in rows[split]]
    with_cam = [(split, row) for split, row in every if row.cam is not None]
    without_cam = [(split, row) for split, row in every if row.cam is None]
    if len(with_cam) < len(without_cam):
        odd, what = with_cam, (f"reads as path, identity and camera, unlike the other {len(without_cam)} line(s), "
                               "which have no camera column (a path containing spaces that does not end in an "
                               "image extension is split there: use a .csv list)")
    else:
        odd, what = without_cam, f"has no camera column, unlike the other {len(with_cam)} line(s)"
    return [UnparsedFile(f"{lists[split]}:{row.line}: `{' '.join(filter(None, row[:3]))}` {what}; give every line "
                         "a camera label, or none", LINE_PATTERN, LINE_EXAMPLE) for split, row in odd]


def _is_junk(label: str) -> bool:
    """Identity -1: junk boxes, as in Market-1501."""
    return _is_int(label) and int(label) == -1


def _is_int(text: str) -> bool:
    """A number a tensor can hold (larger ones are numbered like names)."""
    try:
        return abs(int(text)) <= INT64_MAX
    except ValueError:
        return False


def _numbering(labels) -> dict[str, int]:
    """Labels to 0..N-1, numbers in numeric order before names in text order."""
    unique = set(labels)
    ordered = sorted(unique, key=lambda x: (0, int(x), "") if _is_int(x) else (1, 0, x))
    return {label: i for i, label in enumerate(ordered)}
