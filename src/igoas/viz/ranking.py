"""Ranked lists: each query followed by its top-K gallery images, framed green (same
identity) or red (another identity), the figure every ReID paper shows."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from igoas.utils.errors import IgoasError
from igoas.viz._figure import DEFAULT_DPI, Grid, PathLike, framed, read_image, save_figure, show_image

MATCH_COLOUR = (0.0, 0.8, 0.0)
MISMATCH_COLOUR = (0.9, 0.0, 0.0)
QUERY_COLOUR = (0.2, 0.2, 0.2)
UNKNOWN_COLOUR = (0.6, 0.6, 0.6)  # match flag None: the query's identity is not known


def top_ranked(distances: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
               g_camids: np.ndarray, topk: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The `topk` nearest gallery indices per query and whether each is a true match.

    The evaluation protocol's exclusions apply, so the figure shows what the metrics
    score: gallery images of the query's identity seen by the query's camera, and junk
    identity -1, are left out. Rows with fewer than `topk` candidates are padded with
    index -1 (and match False).
    """
    distances = np.asarray(distances)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    indices = np.full((distances.shape[0], topk), -1, dtype=np.int64)
    matches = np.zeros((distances.shape[0], topk), dtype=bool)
    for row in range(distances.shape[0]):
        order = np.argsort(distances[row], kind="stable")
        same_view = (g_pids[order] == q_pids[row]) & (g_camids[order] == q_camids[row])
        order = order[~same_view & (g_pids[order] != -1)][:topk]
        indices[row, :len(order)] = order
        matches[row, :len(order)] = g_pids[order] == q_pids[row]
    return indices, matches


@dataclass(frozen=True)
class RankedLists:
    """What a ranked-list figure shows, per query: its top gallery images (the protocol's
    exclusions applied), whether each is a true match, its distance of `metric` and identity."""

    query_paths: list[str]
    query_pids: list[int]
    gallery_paths: list[list[str]]
    matches: list[list[bool]]
    distances: list[list[float]]
    gallery_pids: list[list[int]]
    metric: str = "euclidean"

    @classmethod
    def from_distances(cls, distances: np.ndarray, query_paths: Sequence[PathLike], q_pids: np.ndarray,
                       q_camids: np.ndarray, gallery_paths: Sequence[PathLike], g_pids: np.ndarray,
                       g_camids: np.ndarray, topk: int = 10, metric: str = "euclidean") -> "RankedLists":
        """The lists of a query x gallery matrix of `metric` distances (see `compute_distance`)."""
        distances, g_pids = np.asarray(distances), np.asarray(g_pids)
        indices, matches = top_ranked(distances, q_pids, g_pids, q_camids, g_camids, topk)
        found = [row[row >= 0] for row in indices]
        return cls([str(p) for p in query_paths], np.asarray(q_pids).tolist(),
                   [[str(gallery_paths[i]) for i in row] for row in found],
                   [row[:len(kept)].tolist() for row, kept in zip(matches, found)],
                   [distances[q, row].tolist() for q, row in enumerate(found)], [g_pids[row].tolist() for row in found],
                   metric)

    def plot(self, out_path: PathLike, topk: int = 10, per_query: bool = False, **options: Any) -> list[Path]:
        """The figure (or with `per_query`, one figure per query in the folder `out_path`)."""
        lists = (self.query_paths, self.gallery_paths, self.matches, out_path)
        details = {"scores_per_query": self.distances, "gallery_pids_per_query": self.gallery_pids,
                   "query_pids": self.query_pids, "score_name": self.metric, **options}
        if per_query:
            return plot_ranked_list_per_query(*lists, topk=topk, **details)
        return [plot_ranked_lists(*lists, topk=topk, **details)]


def plot_ranked_lists(query_paths: Sequence[PathLike], gallery_paths_per_query: Sequence[Sequence[PathLike]],
                      matches_per_query: Sequence[Sequence[bool | None]], out_path: PathLike, topk: int = 10, *,
                      scores_per_query: Sequence[Sequence[float]] | None = None,
                      gallery_pids_per_query: Sequence[Sequence[int]] | None = None,
                      query_pids: Sequence[int] | None = None, score_name: str = "euclidean",
                      panel_size: tuple[int, int] = (64, 128), frame: int = 4, dpi: int = DEFAULT_DPI) -> Path:
    """One row per query: the query (grey frame), then its first `topk` gallery images.

    With `scores_per_query` (distances of the metric `score_name`) and
    `gallery_pids_per_query` / `query_pids`, each panel is captioned with its rank,
    identity and distance (`#1 id 12` over `euclidean 0.431`), as torchreid's visrank
    draws them, the metric named so the number reads the same as every other tool's.
    `panel_size` is (width, height) of each image in pixels; the figure is
    `(1 + K) * (width + 6)` by `rows * (height + title + 6)` pixels (see `Grid`; the title
    strip is 16 pixels, 26 with captions), K being `topk` or the longest list if shorter.
    """
    if not (len(query_paths) == len(gallery_paths_per_query) == len(matches_per_query)):
        raise IgoasError(
            f"ranked lists need one gallery list and one match list per query; got {len(query_paths)} queries, "
            f"{len(gallery_paths_per_query)} gallery lists and {len(matches_per_query)} match lists")
    if not query_paths:
        raise IgoasError("ranked lists need at least one query")
    for gallery, matches in zip(gallery_paths_per_query, matches_per_query):
        if len(matches) < min(len(gallery), topk):
            raise IgoasError(f"a query has {len(gallery)} gallery images but only {len(matches)} match flags")
    captions = _captions(len(query_paths), topk, scores_per_query, gallery_pids_per_query, query_pids, score_name)
    columns = 1 + min(topk, max(len(gallery) for gallery in gallery_paths_per_query))
    grid = Grid(rows=len(query_paths), cols=columns, panel_width=panel_size[0], panel_height=panel_size[1],
                title=26 if captions.detailed else 16)
    figure = grid.figure(dpi)
    for row, (query, gallery, matches) in enumerate(zip(query_paths, gallery_paths_per_query, matches_per_query)):
        show_image(grid.axes(figure, row, 0), framed(read_image(query, *panel_size), QUERY_COLOUR, frame),
                   captions.query(row), fontsize=7)
        for rank, (path, match) in enumerate(zip(list(gallery)[:topk], matches), start=1):
            colour = UNKNOWN_COLOUR if match is None else MATCH_COLOUR if match else MISMATCH_COLOUR
            show_image(grid.axes(figure, row, rank), framed(read_image(path, *panel_size), colour, frame),
                       captions.gallery(row, rank), fontsize=7)
    return save_figure(figure, out_path)


def plot_ranked_list_per_query(query_paths: Sequence[PathLike], gallery_paths_per_query: Sequence[Sequence[PathLike]],
                               matches_per_query: Sequence[Sequence[bool | None]], out_dir: PathLike,
                               topk: int = 10, suffix: str = ".png", **options: Any) -> list[Path]:
    """One figure per query in `out_dir` (`001_<query file name>.png`, ...), as torchreid's
    visrank writes them; `options` are those of `plot_ranked_lists`."""
    per_row = {key: options.pop(key) for key in ("scores_per_query", "gallery_pids_per_query", "query_pids")
               if options.get(key) is not None}
    written = []
    for row, query in enumerate(query_paths):
        out_path = Path(out_dir) / f"{row + 1:03d}_{Path(query).stem}{suffix}"
        written.append(plot_ranked_lists([query], [gallery_paths_per_query[row]], [matches_per_query[row]], out_path,
                                         topk, **{key: [value[row]] for key, value in per_row.items()}, **options))
    return written


@dataclass(frozen=True)
class _Captions:
    """Panel titles of a ranked-list figure (rank only, or rank, identity and score)."""

    scores: Sequence[Sequence[float]] | None
    gallery_pids: Sequence[Sequence[int]] | None
    query_pids: Sequence[int] | None
    score_name: str

    @property
    def detailed(self) -> bool:
        return self.scores is not None or self.gallery_pids is not None

    def query(self, row: int) -> str:
        known = self.query_pids is not None and self.query_pids[row] >= 0
        return f"query\nid {self.query_pids[row]}" if known else "query"

    def gallery(self, row: int, rank: int) -> str:
        first = f"#{rank}" + (f" id {self.gallery_pids[row][rank - 1]}" if self.gallery_pids is not None else "")
        if self.scores is None:
            return first
        return f"{first}\n{self.score_name} {self.scores[row][rank - 1]:.3f}"


def _captions(rows: int, topk: int, scores: Sequence[Sequence[float]] | None,
              gallery_pids: Sequence[Sequence[int]] | None, query_pids: Sequence[int] | None,
              score_name: str) -> _Captions:
    for name, values in (("scores_per_query", scores), ("gallery_pids_per_query", gallery_pids),
                         ("query_pids", query_pids)):
        if values is not None and len(values) != rows:
            raise IgoasError(f"{name} has {len(values)} entries for {rows} queries")
    return _Captions(scores, gallery_pids, query_pids, score_name)
