"""Users' own data: a folder in the Market-1501 layout, or one list file per split.

List files (`train`, `query`, `gallery` with extension .txt or .csv, in ROOT or given
explicitly) hold one image per line: `path pid camid` separated by spaces, or CSV with an
optional `path,pid,camid` header. Paths are relative to the list file's folder (or
absolute); identities and cameras may be any labels (numbers or names):
- training identities become 0..N-1;
- query and gallery identities keep their numbers when all are integers (-1 is junk and
  is dropped, as in Market-1501), otherwise names are numbered jointly so a query still
  matches its gallery entries;
- camera labels become 0..C-1 over all splits.
With no camera column anywhere, the set is evaluated cross-set: queries camera 0,
gallery camera 1.
"""
from __future__ import annotations

import csv
from pathlib import Path

from igoas.data.base import (INT64_MAX, SAME_CAMERA, ReIDDataset, Sample, UnparsedFile, raise_if_unparsed,
                             read_list_file)
from igoas.data.layout import locate_root
from igoas.data.market1501 import MARKET_SPLITS, read_market_layout
from igoas.errors import DatasetError

SPLITS = ("train", "query", "gallery")
LIST_SUFFIXES = (".txt", ".csv")
LINE_PATTERN = "path pid camid (space-separated, or comma-separated in a .csv; camid optional when no line has one)"
LINE_EXAMPLE = "images/cam2/alice_0003.jpg alice 2"
LAYOUTS = ("auto", "market", "lists")

Row = tuple[str, str, str | None]  # path, identity label, camera label


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

    Space-separated lines take the last two fields as labels, so a path may contain
    spaces when a camera column is present; CSV handles every other case.
    """
    rows, bad = [], []
    lines = read_list_file(path)
    is_csv = path.suffix.lower() == ".csv"
    records = csv.reader(lines) if is_csv else (line.rsplit(None, 2) for line in lines)
    for number, fields in enumerate(records, start=1):
        fields = [f.strip() for f in fields]
        if not any(fields) or (number == 1 and is_csv and fields[:2] == ["path", "pid"]):
            continue
        if len(fields) not in (2, 3) or not all(fields):
            bad.append(UnparsedFile(f"{path}:{number}: {lines[number - 1]}", LINE_PATTERN, LINE_EXAMPLE))
            continue
        rows.append((fields[0], fields[1], fields[2] if len(fields) == 3 else None))
    return rows, bad


def read_lists(root: Path, lists: dict[str, Path | None], strict: bool) -> ReIDDataset:
    """Build the dataset from parsed list files, numbering labels as the module doc says."""
    rows, unparsed = {}, []
    for split, path in lists.items():
        rows[split], bad = parse_list(path) if path else ([], [])
        unparsed += bad
    has_cams = {cam is not None for split_rows in rows.values() for _, _, cam in split_rows}
    if has_cams == {True, False}:
        unparsed += [UnparsedFile(f"{lists[s]}: {p} has no camera while other lines do", LINE_PATTERN, LINE_EXAMPLE)
                     for s in SPLITS for p, _, cam in rows[s] if cam is None]
        rows = {s: [r for r in rows[s] if r[2] is not None] for s in SPLITS}
    raise_if_unparsed("custom", unparsed, strict)
    cross_set = has_cams == {False}
    cameras = _numbering(cam for split_rows in rows.values() for _, _, cam in split_rows if cam is not None)
    test_ids = [pid for s in ("query", "gallery") for _, pid, _ in rows[s]]
    test_numbering = None if all(_is_int(p) for p in test_ids) else _numbering(test_ids)
    samples = {}
    for split in SPLITS:
        base = lists[split].parent if lists[split] else root
        numbering = _numbering(pid for _, pid, _ in rows[split]) if split == "train" else test_numbering
        out = []
        for path, pid, cam in rows[split]:
            label = numbering[pid] if numbering is not None else int(pid)
            if numbering is None and label == -1:
                continue
            camid = {"train": 0, "query": 0, "gallery": 1}[split] if cross_set else cameras[cam]
            out.append(Sample(str(base / path), label, camid))
        samples[split] = out
    protocol = {"protocol": "cross_set" if cross_set else SAME_CAMERA["protocol"]}
    if lists["train"] is None:  # evaluation only: a model trained on another set
        protocol["train_source"] = "another dataset"
    return ReIDDataset(name="custom", root=str(root), train=samples["train"], query=samples["query"],
                       gallery=samples["gallery"], protocol_info=protocol, unparsed_files=unparsed)


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
