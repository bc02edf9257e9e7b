"""What every dataset family shares: the sample record, the dataset container, name
parsing, relabelling, statistics tables and the combination of training sources.

Families differ only in where their files are and how names encode identity and camera;
everything that follows from (path, pid, camid) lives here so the families stay short.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from igoas.imaging.images import IMAGE_EXTENSIONS
from igoas.utils.errors import DatasetError

INT64_MAX = 2**63 - 1
SAME_CAMERA = {"protocol": "same_camera"}
CROSS_SET = {"protocol": "cross_set", "train_source": "market1501"}
MAX_LISTED = 5  # how many offending files an error message names before "and N more"


@dataclass(frozen=True)
class Sample:
    """One image: its path, identity, 0-based camera and the source it came from."""

    path: str
    pid: int
    camid: int
    dsetid: int = 0


@dataclass(frozen=True)
class UnparsedFile:
    """An image name (or list line) that does not follow its dataset's form (kept for `data check`).

    `problem` is empty for a name that does not parse, else why the entry cannot be read at
    all (a dangling link, a link loop, a name that is not UTF-8).
    """

    path: str
    form: str
    example: str
    problem: str = ""


@dataclass
class ReIDDataset:
    """Train, query and gallery of one dataset plus the protocol its results must record.

    `extra_queries` are further query sets ranked against the same gallery (the synthetic
    set's holistic queries); `distractor_pids` are identities that only pad the gallery
    (Market-1501's 0000) and never become training classes when splits are combined.
    """

    name: str
    root: str
    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]
    extra_queries: dict[str, list[Sample]] = field(default_factory=dict)
    protocol_info: dict = field(default_factory=lambda: dict(SAME_CAMERA))
    distractor_pids: frozenset[int] = frozenset()
    unparsed_files: list[UnparsedFile] = field(default_factory=list)

    @property
    def num_train_pids(self) -> int:
        return len({s.pid for s in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({(s.dsetid, s.camid) for s in self.train})

    def splits(self) -> dict[str, list[Sample]]:
        """Every split by name, extra query sets as `query:NAME`."""
        out = {"train": self.train, "query": self.query, "gallery": self.gallery}
        out.update({f"query:{k}": v for k, v in self.extra_queries.items()})
        return out

    def statistics(self, published: dict[str, tuple[int, int]] | None = None) -> str:
        """The table ReID papers print: identities, images and cameras per split.

        With `published` (split -> (ids, images)) a last column compares the copy with the
        community's counts, which is how a user sees that a copy is incomplete.
        """
        header = ["split", "ids", "images", "cameras"] + (["published ids/images"] if published else [])
        rows = []
        for split, samples in self.splits().items():
            ids, images, cams = split_statistics(samples)
            row = [split, str(ids), str(images), str(cams)]
            if published:
                expected = published.get(split)
                mark = "" if expected is None or expected == (ids, images) else "  (differs)"
                row.append("-" if expected is None else f"{expected[0]}/{expected[1]}{mark}")
            rows.append(row)
        return protocol_title(self.name, self.protocol_info) + "\n" + format_table(header, rows)


def protocol_title(name: str, protocol_info: Mapping[str, Any]) -> str:
    """`NAME (protocol=..., ...)`: how tables and records say which protocol a number used."""
    return f"{name} ({', '.join(f'{key}={value}' for key, value in protocol_info.items())})"


def split_statistics(samples: Sequence[Sample]) -> tuple[int, int, int]:
    """(identities, images, cameras) of one split; cameras counted per source."""
    return (
        len({(s.dsetid, s.pid) for s in samples}),
        len(samples),
        len({(s.dsetid, s.camid) for s in samples}),
    )


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with right-aligned numbers, readable in a terminal and a log."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = str(cells[0]).ljust(widths[0])
        return "  " + " | ".join([first] + [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:])])

    rule = "  " + "-+-".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


@dataclass(frozen=True)
class NamePattern:
    """How a family's file names encode identity (and camera): a regex with named groups
    `pid` and optionally `cam` (1-based in the name), the form and an example for messages."""

    regex: str
    form: str
    example: str

    def parse(self, filename: str) -> tuple[int, int | None] | None:
        match = re.match(self.regex, filename)
        if match is None:
            return None
        cam = match.groupdict().get("cam")
        pid = int(match.group("pid"))
        if abs(pid) > INT64_MAX:  # an identity no tensor can hold
            return None
        return pid, (int(cam) if cam is not None else None)


def image_entries(folder: Path, recursive: bool = False) -> list[Path]:
    """Every entry of a folder named like an image, readable or not, in sorted order.

    Unlike `Path.rglob`, an unreadable sub-folder is an error that names it, not a silent gap.
    """
    try:
        if recursive:
            errors: list[OSError] = []
            entries = [Path(top, name) for top, dirs, files in os.walk(folder, onerror=errors.append)
                       for name in files + [d for d in dirs if Path(top, d).is_symlink()]]
            if errors:
                raise errors[0]
        else:
            entries = list(folder.iterdir())
    except OSError as err:
        raise DatasetError(f"{err.filename or folder}: cannot list the folder ({err.strerror or err}); make it "
                           "readable (e.g. chmod -R u+rX) or remove it from the dataset.") from None
    return sorted(p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir())


def unusable_reason(path: Path) -> str:
    """Why an image entry can never be read (empty when it can be tried): entries a plain
    `is_file()` test would drop silently."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        return "the file name is not valid UTF-8; rename it"
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except FileNotFoundError:
            return "a symbolic link to a missing file; restore the target or remove the link"
        except (RuntimeError, OSError):
            return "a symbolic link loop; remove the link"
    return "" if path.is_file() else "not a regular file"


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Readable image files of a folder in a stable order (sorted), so loaders are deterministic."""
    return [p for p in image_entries(folder, recursive) if not unusable_reason(p)]


def scan_folder(
    folder: Path, pattern: NamePattern, recursive: bool = False
) -> tuple[list[tuple[Path, int, int | None]], list[UnparsedFile]]:
    """Parse every image name of a folder; names that do not match, and entries that cannot
    be read at all, are returned apart."""
    parsed, unparsed = [], []
    for path in image_entries(folder, recursive):
        problem = unusable_reason(path)
        result = None if problem else pattern.parse(path.name)
        if result is None:
            unparsed.append(UnparsedFile(str(path), pattern.form, pattern.example, problem))
        else:
            parsed.append((path, *result))
    return parsed, unparsed


def raise_if_unparsed(name: str, unparsed: Sequence[UnparsedFile], strict: bool) -> None:
    """Strict loading refuses names it cannot parse rather than silently training on less."""
    if not strict or not unparsed:
        return
    unreadable = [u for u in unparsed if u.problem]
    if unreadable:
        listed = listing([f"{u.path!r}: {u.problem}" for u in unreadable])
        raise DatasetError(f"{name}: {len(unreadable)} image entr(y/ies) cannot be read:{listed}\n"
                           "`igoas data check` lists every problem of the copy.")
    raise DatasetError(f"{name}: {len(unparsed)} image name(s) or list line(s) do not match the expected form "
                       f"{unparsed[0].form} (e.g. {unparsed[0].example}):{listing([u.path for u in unparsed])}\n"
                       "Rename or remove them, or load with strict=False to skip them; "
                       "`igoas data check` lists every problem of the copy.")


def listing(lines: Sequence[str]) -> str:
    """The first MAX_LISTED lines, indented on lines of their own, then how many more there are."""
    more = [f"... and {len(lines) - MAX_LISTED} more"] if len(lines) > MAX_LISTED else []
    return "".join(f"\n  {line}" for line in [*lines[:MAX_LISTED], *more])


def read_list_file(path: Path) -> list[str]:
    """The lines of a UTF-8 text list file, or a DatasetError naming the file and what it holds instead.

    A leading byte-order mark (as some Windows editors write) is dropped: kept, it would
    become part of the first image's path and make an existing image look missing.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read the list file ({err.strerror or err}); make it readable.") from None
    if b"\0" in data:
        raise DatasetError(f"{path}: a binary file, not a text list (one `path identity` line per image); "
                           "check that this is the right file.")
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DatasetError(f"{path}: line {line} is not UTF-8 text; save the list as UTF-8.") from None


def relabel(samples: Iterable[Sample]) -> list[Sample]:
    """Map identities to 0..N-1 in sorted order: classifier targets must be dense."""
    samples = list(samples)
    mapping = {pid: label for label, pid in enumerate(sorted({s.pid for s in samples}))}
    return [Sample(s.path, mapping[s.pid], s.camid, s.dsetid) for s in samples]


def combine_train_sets(datasets: Sequence[ReIDDataset], combineall: bool = False) -> list[Sample]:
    """One training list from several sources, identities and cameras kept apart per source.

    Identities are keyed by (source, part, pid): with `combineall` a dataset's query and
    gallery identities join as new classes, distinct from its training ones even where
    numbers collide (MSMT17 numbers both from 0). Junk (-1) and distractor identities are
    left out because they are not classes. `distractor_pids` are numbers as the file names
    write them, so they only apply to query and gallery: the training split is already
    relabelled to 0..N-1, where label 0 is a real identity (Market-1501's 0002). Cameras are
    offset per source so that camera 0 of one dataset is not camera 0 of another; `dsetid`
    records the source.
    """
    keyed: list[tuple[tuple[int, int, int], Sample]] = []
    cam_offset = 0
    for source, dataset in enumerate(datasets):
        parts = [dataset.train]
        if combineall:
            parts.append(dataset.query + dataset.gallery)
        used_cams = {s.camid for part in parts for s in part}
        for part_index, part in enumerate(parts):
            seen: set[str] = set()
            not_classes = dataset.distractor_pids if part_index else frozenset()
            for s in part:
                if s.pid < 0 or s.pid in not_classes or s.path in seen:
                    continue
                seen.add(s.path)
                keyed.append(((source, part_index, s.pid), Sample(s.path, s.pid, s.camid + cam_offset, source)))
        cam_offset += max(used_cams, default=-1) + 1
    labels = {key: i for i, key in enumerate(sorted({k for k, _ in keyed}))}
    return [Sample(s.path, labels[k], s.camid, s.dsetid) for k, s in keyed]


def camera_name(camid: int) -> str:
    """A 0-based camera id as the datasets' file names write it ("c1" for 0); "-" when unknown."""
    return f"c{int(camid) + 1}" if camid >= 0 else "-"


def make_samples(parsed: Iterable[tuple[Path, int, int | None]], camid: int | None = None) -> list[Sample]:
    """Samples from parsed names: 1-based name cameras become 0-based, or a fixed camera
    is imposed (cross-set protocols); junk identities (-1) are dropped."""
    return [Sample(str(path), pid, camid if camid is not None else int(cam) - 1)
            for path, pid, cam in parsed if pid != -1]


def read_cross_set(name: str, folder: Path, query_dir: Path, gallery_dir: Path, pattern: NamePattern,
                   strict: bool, protocol_info: dict | None = None) -> ReIDDataset:
    """A test set whose query folder is camera 0 and gallery folder camera 1 (no training split).

    Cross-set sets have no camera labels that matter: giving the two sides different
    cameras makes the one same-camera evaluation protocol remove nothing for them.
    """
    query, bad = scan_folder(query_dir, pattern, recursive=True)
    gallery, bad_gallery = scan_folder(gallery_dir, pattern, recursive=True)
    raise_if_unparsed(name, bad + bad_gallery, strict)
    return ReIDDataset(name=name, root=str(folder), train=[], query=make_samples(query, camid=0),
                       gallery=make_samples(gallery, camid=1), protocol_info=dict(protocol_info or CROSS_SET),
                       unparsed_files=bad + bad_gallery)


def query_samples(dataset: "ReIDDataset", query_set: str) -> list[Sample]:
    """The samples of `query_set`: "query" or the name of one of the dataset's extra query sets."""
    if query_set == "query":
        samples = list(dataset.query)
    else:
        extra = dict(getattr(dataset, "extra_queries", {}) or {})
        if query_set not in extra:
            raise DatasetError(f"dataset {getattr(dataset, 'name', '')!r} has no query set {query_set!r}; "
                              f"choose from {['query'] + sorted(extra)}")
        samples = list(extra[query_set])
    if not samples:
        raise DatasetError(f"dataset {getattr(dataset, 'name', '')!r}: the {query_set!r} set is empty")
    return samples
