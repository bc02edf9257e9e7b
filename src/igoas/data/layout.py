"""Finding a dataset's folder under whatever ROOT the user gives, and saying precisely
what is wrong when it is not there: the expected tree and the closest existing names."""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path

from igoas.utils.errors import DatasetError


def layout_tree(candidates: Sequence[str], required: Sequence[str]) -> str:
    """The expected folder tree, shown whenever a copy is not where it should be."""
    tops = [f"ROOT/{c}/" if c else "ROOT/ itself" for c in candidates]
    lines = [f"  {tops[0]}" + (f"   (or {', '.join(tops[1:])})" if len(tops) > 1 else "")]
    lines += [f"      {entry}" + ("" if Path(entry).suffix else "/") for entry in required]
    return "\n".join(lines)


def locate_root(root: str | Path, name: str, candidates: Sequence[str], required: Sequence[str]) -> Path:
    """Find the folder holding `required` entries, trying ROOT and ROOT/<candidate>.

    Users point at the parent folder, at the dataset folder, or at the unzipped folder
    itself; every one of these is accepted. When none fits, the error shows the expected
    tree and, for each missing entry, the closest name that does exist (a misspelt or
    renamed folder is the usual cause).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{name}: dataset root {root} does not exist or is not a folder; "
                           f"pass the folder that holds the dataset.\nExpected layout:\n"
                           f"{layout_tree(candidates, required)}")
    options = [root] + [root / c for c in candidates if c]
    existing = [d for d in options if d.is_dir()]
    scored = [(sum((d / r).exists() for r in required), -i, d) for i, d in enumerate(existing)]
    best_score, _, best = max(scored, key=lambda t: (t[0], t[1]))
    if best_score == len(required):
        return best
    hints = _closest_names(best, required)
    if not best_score:
        near = _closest_path_names(root, candidates)
        hints = near[:1] + [h for d in existing for h in _closest_names(d, required)]
    hint_text = ""
    for want, found in hints:
        holds = all((Path(found) / r).exists() for r in required)
        extra = " (it holds the expected folders: rename it, or pass it as ROOT)" if holds else ""
        hint_text += f"\n  expected {want!r}, closest found: {found!r}{extra}"
    raise DatasetError(
        f"{name}: the dataset layout was not found under {best if best_score else root}."
        f"{hint_text or chr(10) + '  no folder with a similar name was found'}\n"
        f"Expected layout:\n{layout_tree(candidates, required)}\n"
        f"Rename the folders to match, or point ROOT at the right folder."
    )


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _closest_names(folder: Path, wanted: Iterable[str]) -> list[tuple[str, str]]:
    """(wanted, closest existing entry) pairs for the entries missing from `folder`."""
    present = _entries(folder)
    pairs = []
    for want in wanted:
        if (folder / want).exists():
            continue
        close = difflib.get_close_matches(want, present, n=1, cutoff=0.5)
        if close:
            pairs.append((str(folder / want), str(folder / close[0])))
    return pairs


def _closest_path_names(root: Path, candidates: Iterable[str]) -> list[tuple[str, str]]:
    """For nested candidate paths: the first missing component and its closest sibling,
    most similar first."""
    pairs = []
    for candidate in candidates:
        folder = root
        for part in filter(None, candidate.split("/")):
            if (folder / part).is_dir():
                folder = folder / part
                continue
            pairs.extend(_closest_names(folder, [part]))
            break
    return sorted(dict.fromkeys(pairs), key=_similarity, reverse=True)


def _similarity(pair: tuple[str, str]) -> float:
    return difflib.SequenceMatcher(None, Path(pair[0]).name, Path(pair[1]).name).ratio()
