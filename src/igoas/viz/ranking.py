"""Ranked lists: each query followed by its top-K gallery images, framed green (same
identity) or red (another identity), the figure every ReID paper shows."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from igoas.errors import IgoasError
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


def plot_ranked_lists(query_paths: Sequence[PathLike], gallery_paths_per_query: Sequence[Sequence[PathLike]],
                      matches_per_query: Sequence[Sequence[bool | None]], out_path: PathLike, topk: int = 10, *,
                      panel_size: tuple[int, int] = (64, 128), frame: int = 4, dpi: int = DEFAULT_DPI) -> Path:
    """One row per query: the query (grey frame), then its first `topk` gallery images.

    `panel_size` is (width, height) of each image in pixels; the figure is
    `(1 + K) * (width + 6)` by `rows * (height + 22)` pixels (see `Grid`), K being
    `topk` or the longest list if shorter.
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
    columns = 1 + min(topk, max(len(gallery) for gallery in gallery_paths_per_query))
    grid = Grid(rows=len(query_paths), cols=columns, panel_width=panel_size[0], panel_height=panel_size[1])
    figure = grid.figure(dpi)
    for row, (query, gallery, matches) in enumerate(zip(query_paths, gallery_paths_per_query, matches_per_query)):
        show_image(grid.axes(figure, row, 0), framed(read_image(query, *panel_size), QUERY_COLOUR, frame), "query")
        for rank, (path, match) in enumerate(zip(list(gallery)[:topk], matches), start=1):
            colour = UNKNOWN_COLOUR if match is None else MATCH_COLOUR if match else MISMATCH_COLOUR
            show_image(grid.axes(figure, row, rank), framed(read_image(path, *panel_size), colour, frame), f"#{rank}")
    return save_figure(figure, out_path)
