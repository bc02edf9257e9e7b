"""Validate a dataset copy without training (behind `igoas data check`).

Every problem found is collected, grouped by kind, and reported with what to do about it:
a missing or misnamed folder (with the expected tree and the closest folder found), file
names that do not parse (with the expected form), missing, zero-byte, unreadable or
truncated images, images that are not RGB, duplicate entries, empty splits, and query
identities the gallery cannot match. Errors make the copy unusable or the results wrong;
warnings are worth a look but loading copes with them; notes are information.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from igoas.data.base import ReIDDataset, Sample
from igoas.data.registry import build_dataset, published_statistics
from igoas.imaging.images import FORMAT_NAMES, IMAGE_FORMATS, max_image_pixels
from igoas.utils.errors import DatasetError

SEVERITIES = ("error", "warning", "note")


@dataclass
class Problem:
    """One kind of problem, what to do about it, and the files or entries concerned."""

    severity: str
    title: str
    hint: str
    items: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    """The outcome of a check: problems by kind plus the statistics of what was read."""

    dataset: str
    root: str
    problems: list[Problem] = field(default_factory=list)
    statistics: str = ""

    def count(self, severity: str) -> int:
        return sum(1 for p in self.problems if p.severity == severity)

    def exit_code(self, strict: bool = False) -> int:
        """0 when clean (warnings allowed unless `strict`), 1 otherwise."""
        failing = self.count("error") + (self.count("warning") if strict else 0)
        return 1 if failing else 0

    def format(self, max_items: int = 20) -> str:
        lines = [f"igoas data check: {self.dataset} at {self.root}"]
        if self.statistics:
            lines += ["", self.statistics]
        for problem in sorted(self.problems, key=lambda p: SEVERITIES.index(p.severity)):
            count = f" ({len(problem.items)})" if problem.items else ""
            lines += ["", f"{problem.severity.upper()}: {problem.title}{count}"]
            lines += [f"  {line}" for line in problem.hint.splitlines()]
            lines += [f"    {printable(item)}" for item in problem.items[:max_items]]
            if len(problem.items) > max_items:
                lines.append(f"    ... and {len(problem.items) - max_items} more")
        errors, warnings = self.count("error"), self.count("warning")
        verdict = "no problems found" if not errors + warnings else f"{errors} error(s), {warnings} warning(s)"
        lines += ["", f"summary: {verdict}"]
        return "\n".join(lines)


def printable(text: str) -> str:
    """`text` with the bytes of non-UTF-8 file names shown as \\xNN escapes (printing them raw fails)."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def inspect_image(path: str) -> tuple[str, str, str]:
    """(status, detail, content digest) of one file: status is ok, missing, empty,
    unreadable, truncated, too_large (more pixels than training reads) or mode (decodes,
    but not as RGB)."""
    from PIL import Image, UnidentifiedImageError

    file = Path(path)
    if not file.is_file():
        return "missing", "", ""
    try:
        data = file.read_bytes()
    except OSError as err:  # permissions, I/O errors
        return "unreadable", err.strerror or str(err), ""
    if not data:
        return "empty", "", ""
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # igoas's own limit decides
            image = Image.open(file, formats=tuple(IMAGE_FORMATS))
        with image:
            width, height = image.size
            if width * height > max_image_pixels():
                return "too_large", f"{width} x {height} pixels", digest
            image.load()
            mode = image.mode
    except Image.DecompressionBombError as err:
        return "too_large", str(err).split(",")[0], digest
    except UnidentifiedImageError:
        return "unreadable", f"not a {FORMAT_NAMES} image", digest
    except OSError as err:
        status = "truncated" if "truncated" in str(err) else "unreadable"
        return status, str(err), digest
    except Exception as err:  # decoders raise assorted errors on corrupt data
        return "unreadable", f"{type(err).__name__}: {err}", digest
    return ("ok" if mode == "RGB" else "mode"), mode, digest


IMAGE_PROBLEMS = {
    "missing": ("error", "missing files", "These entries point to files that do not exist; restore them or "
                "remove them from the list files."),
    "empty": ("error", "zero-byte files", "These files are empty (an interrupted copy or download); copy them again."),
    "unreadable": ("error", "unreadable images", "These files cannot be decoded as images; copy them again or "
                   "remove them."),
    "truncated": ("error", "truncated images", "These images end early (an interrupted copy); copy them again."),
    "too_large": ("error", "images with too many pixels", "Training and evaluation refuse images above "
                  "IGOAS_MAX_IMAGE_PIXELS (64 million by default) from their header; shrink them, or raise the "
                  "limit if they are meant."),
    "mode": ("warning", "images that are not RGB", "They are converted to RGB when loaded; check they are the "
             "images you expect (grey-scale or with transparency)."),
}


def check_images(paths: Iterable[str], num_workers: int = 4) -> list[Problem]:
    """Decode every file once (threads: the decoders release the GIL) and group failures."""
    paths = sorted(set(paths))
    found: dict[str, list[str]] = defaultdict(list)
    by_digest: dict[str, list[str]] = defaultdict(list)
    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        for path, (status, detail, digest) in zip(paths, pool.map(inspect_image, paths)):
            if status != "ok":
                found[status].append(f"{path} ({detail})" if detail else path)
            if digest:
                by_digest[digest].append(path)
    problems = [Problem(*IMAGE_PROBLEMS[status], items) for status, items in found.items()]
    same = [" = ".join(group) for group in by_digest.values() if len(group) > 1]
    if same:
        problems.append(Problem("warning", "identical images under different names",
                                "Byte-identical files; if they sit in different splits, test images leak into "
                                "training or a query matches itself.", same))
    return problems


def trains_elsewhere(dataset: ReIDDataset) -> bool:
    """Whether the dataset's protocol trains on another dataset (cross-set test sets)."""
    return dataset.protocol_info.get("train_source", dataset.name) != dataset.name


def test_readiness(datasets: dict[str, ReIDDataset]) -> list[str]:
    """Problems of the query and gallery splits that would only surface at evaluation,
    found before any training: one line per problem (empty when evaluation can run)."""
    found = []
    for name, dataset in datasets.items():
        for split in ("query", "gallery"):
            if not getattr(dataset, split):
                found.append(f"{name} at {dataset.root}: the {split} split holds no image")
        cameras: dict[int, set[int]] = defaultdict(set)
        for s in dataset.gallery:
            cameras[s.pid].add(s.camid)
        if dataset.query and dataset.gallery and not any(cameras[q.pid] - {q.camid} for q in dataset.query):
            found.append(f"{name} at {dataset.root}: no query has an image of its identity from another camera "
                         "in the gallery, so nothing can be evaluated")
    return found


def ensure_trainable(dataset: ReIDDataset, targets: dict[str, ReIDDataset]) -> None:
    """Refuse, before the first step, a training split that is empty or test splits that
    evaluation could not use (hours of training would end in that error otherwise)."""
    problems = test_readiness(targets)
    if not dataset.train:
        if trains_elsewhere(dataset):
            problems.insert(0, f"{dataset.name} has no training split under its protocol (a test set for models "
                               f"trained on {dataset.protocol_info['train_source']}); train on that dataset and "
                               f"name {dataset.name} in data.targets")
        else:
            problems.insert(0, f"{dataset.name} at {dataset.root}: the training split holds no image; check its "
                               "training folder or train list")
    problems += _test_images_in_training(dataset, targets)
    if problems:
        raise DatasetError("cannot train:\n  " + "\n  ".join(problems)
                           + "\n`igoas data check` lists every problem of a copy.")


def _test_images_in_training(dataset: ReIDDataset, targets: dict[str, ReIDDataset]) -> list[str]:
    """One line per test split that shares image files (by resolved path) with the training
    split: training on them would score the model on images it learnt."""
    training = {os.path.realpath(sample.path) for sample in dataset.train}
    lines = []
    for name, target in {dataset.name: dataset, **targets}.items():
        for split, samples in target.splits().items():
            if split == "train":
                continue
            shared = [sample.path for sample in samples if os.path.realpath(sample.path) in training]
            if shared:
                lines.append(f"{len(shared)} image(s) of {name}'s {split} split are also training images "
                             f"(e.g. {shared[0]}): test images would leak into training; remove them from the "
                             "training split (its folder or train list)")
    return lines


def _split_problems(dataset: ReIDDataset) -> list[Problem]:
    problems = []
    for split, samples in dataset.splits().items():
        if not samples and not (split == "train" and trains_elsewhere(dataset)):
            problems.append(Problem("error", f"empty split: {split}",
                                    f"No image was found for the {split} split; check that its folder or list "
                                    "file holds the images."))
    seen: dict[str, list[str]] = defaultdict(list)
    for split, samples in dataset.splits().items():
        for s in samples:
            seen[s.path].append(split)
    duplicates = [f"{path} (in {', '.join(splits)})" for path, splits in seen.items() if len(splits) > 1]
    if duplicates:
        problems.append(Problem("error", "duplicate entries", "The same file is listed more than once; remove the "
                                "extra entries (a file in two splits also leaks test data).", duplicates))
    return problems


def _matching_problems(dataset: ReIDDataset) -> list[Problem]:
    """Query identities absent from the gallery can never be matched; under the
    same-camera protocol, neither can those seen in the gallery only by their own camera."""
    gallery: dict[int, set[int]] = defaultdict(set)
    for s in dataset.gallery:
        gallery[s.pid].add(s.camid)
    absent, same_camera_only = [], []
    queries: list[tuple[str, Sample]] = [("query", s) for s in dataset.query]
    queries += [(f"query:{name}", s) for name, samples in dataset.extra_queries.items() for s in samples]
    for split, s in queries:
        if s.pid not in gallery:
            absent.append(f"{s.path} (identity {s.pid}, {split})")
        elif not gallery[s.pid] - {s.camid}:
            same_camera_only.append(f"{s.path} (identity {s.pid}, camera {s.camid})")
    problems = []
    if absent:
        problems.append(Problem("error", "query identities missing from the gallery",
                                "These queries have no image of their identity in the gallery, so they can never "
                                "be matched; add the gallery images or remove the queries.", absent))
    if same_camera_only:
        problems.append(Problem("warning", "queries without a gallery match from another camera",
                                "The same-camera protocol removes their only matches, so evaluation skips them.",
                                same_camera_only))
    return problems


def _count_note(dataset: ReIDDataset, published: dict | None) -> list[Problem]:
    if not published:
        return []
    differing = []
    for split, (ids, images) in published.items():
        samples = dataset.splits().get(split, [])
        actual = (len({s.pid for s in samples}), len(samples))
        if actual != (ids, images):
            differing.append(f"{split}: {actual[0]} identities / {actual[1]} images, published {ids} / {images}")
    return [Problem("note", "counts differ from a complete copy",
                    "Expected for a subset; for a full copy, files are missing or extra.", differing)] if differing else []


def check_dataset(root: str | Path, name: str, *, verify_images: bool = True, num_workers: int = 4,
                  **options) -> CheckReport:
    """Check the copy of dataset `name` at `root` (options as for `build_dataset`)."""
    report = CheckReport(name, str(root))
    try:
        dataset = build_dataset(name, root, strict=False, **options)
    except (DatasetError, OSError, ValueError) as err:  # unreadable folders and list files included
        report.problems.append(Problem("error", "dataset layout", str(err)))
        return report
    report.root = dataset.root
    report.statistics = dataset.statistics()
    by_form: dict[tuple[str, str], list[str]] = defaultdict(list)
    cannot_read: dict[str, list[str]] = defaultdict(list)
    for unparsed in dataset.unparsed_files:
        if unparsed.problem:
            cannot_read[unparsed.problem].append(unparsed.path)
        else:
            by_form[(unparsed.form, unparsed.example)].append(unparsed.path)
    for problem, items in cannot_read.items():
        report.problems.append(Problem("error", "image entries that cannot be read",
                                       f"Loading leaves these out: {problem}.", items))
    for (form, example), items in by_form.items():
        report.problems.append(Problem("error", "names that do not parse",
                                       f"Expected the form {form}, e.g. {example}; rename or remove these.", items))
    report.problems += _split_problems(dataset)
    report.problems += _matching_problems(dataset)
    if verify_images:
        paths = [s.path for samples in dataset.splits().values() for s in samples]
        paths += [u.path for u in dataset.unparsed_files if Path(u.path).is_file()]
        report.problems += check_images(paths, num_workers)
    report.problems += _count_note(dataset, published_statistics(name, **options))
    return report
