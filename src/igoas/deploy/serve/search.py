"""One search from the page: query pixels in, the ranked gallery with activation maps out.

Independent of the web framework, so it is usable (and tested) from Python alone. The
query is resized to the model's input, optionally occluded with the occlusion stress
test's rectangles (same areas, positions and seeded fills, a list query drawn with its
position in the list as the stress test draws it), embedded, ranked; when it is occluded
the unoccluded query is ranked too, so each result shows where it stood before.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from igoas.deploy.extraction import ImageList, dataset_images, folder_images
from igoas.deploy.inference import ReIDModel
from igoas.deploy.serve.gallery import SERVE_METRIC, Ranking, earlier_ranks, load_gallery, rank
from igoas.deploy.serve.render import image_uri, overlay_uris
from igoas.evaluation.distance import metric_label
from igoas.imaging.images import ImageInput
from igoas.retrieval import GalleryIndex
from igoas.robustness.occluder_painting import paint_occluder, query_rng
from igoas.robustness.occlusion_stress import DEFAULT_POSITIONS
from igoas.utils.errors import IgoasError
from igoas.viz import activation_maps

RERANKED_METRIC = "k-reciprocal"  # re-ranked distances have a scale of their own
OCCLUSION_SEED = 0  # the stress test's default seed, so the page shows the occluders it scores
UNOCCLUDED_DEPTH = 1000  # how far down the clean query's list a result's earlier rank is looked up


@dataclass(frozen=True)
class Occlusion:
    """The stress test's occluder: `area` percent of the query at `position`, a rectangle of one colour."""

    area: float = 30.0
    position: str = "bottom"


@dataclass
class Hit:
    """One ranked gallery entry as the page shows it."""

    rank: int
    index: int
    path: str
    pid: int
    camid: int
    distance: float
    match: bool | None
    image: str = ""
    maps: dict[str, str] = field(default_factory=dict)
    rank_unoccluded: int | None = None  # with occlusion on: its rank for the clean query (None: below the depth looked at)


@dataclass
class SearchOutcome:
    """The query as embedded (occluded or not), its maps and identity, and the top-K hits."""

    query_image: str
    query_maps: dict[str, str]
    pid: int
    camid: int
    hits: list[Hit]
    occlusion: Occlusion | None
    rerank: bool
    unoccluded_depth: int = UNOCCLUDED_DEPTH  # how far the unoccluded ranking was looked at ("was > #depth")

    @property
    def metric(self) -> str:
        """The name of the hits' distance, as the JSON answer gives it beside the numbers."""
        return RERANKED_METRIC if self.rerank else SERVE_METRIC

    @property
    def metric_label(self) -> str:
        """The hits' distance in words, for the page's legend."""
        return "k-reciprocal re-ranked distance" if self.rerank else metric_label(SERVE_METRIC)


class SearchService:
    """A model, its gallery and the optional query list; `search` is safe to call from several threads."""

    def __init__(self, model: ReIDModel, gallery: GalleryIndex, queries: ImageList | None = None) -> None:
        self.model, self.gallery, self.queries = model, gallery, queries
        self._lock = threading.Lock()  # one forward at a time: the network is shared and CPU cores are few

    def query_choice(self, position: int) -> tuple[str, int, int]:
        """(path, identity, camera) of entry `position` of the query list."""
        if self.queries is None or not 0 <= position < len(self.queries.paths):
            count = 0 if self.queries is None else len(self.queries.paths)
            raise IgoasError(f"no query number {position}: the query list has {count} entries")
        return self.queries.paths[position], self.queries.pids[position], self.queries.camids[position]

    def search(self, image: ImageInput, topk: int = 10, pid: int = -1, camid: int = -1,
               occlusion: Occlusion | None = None, rerank: bool = False, query_index: int = 0) -> SearchOutcome:
        """Rank the gallery for one query image (a path, PIL image, array or tensor).

        `query_index` is the query's position in its list: the occluder is drawn as the
        stress test draws that query's (an upload, in no list, is drawn as query 0).
        """
        if topk < 1:
            raise IgoasError(f"top-K must be at least 1, got {topk}")
        clean, shown = self.prepare(image, occlusion, query_index)
        depth = UNOCCLUDED_DEPTH
        with self._lock:
            embeddings = self.model.embed(torch.stack([shown, clean] if occlusion is not None else [shown]))
            ranking = rank(self.gallery, embeddings[0], topk, pid, camid, rerank)
            hits = self._hits(ranking)
            if occlusion is not None:
                positions, depth = earlier_ranks(self.gallery, embeddings[1], topk, depth, pid, camid, rerank)
                for hit in hits:
                    hit.rank_unoccluded = positions.get(hit.index)
            query_maps = self._draw(shown, hits)
        return SearchOutcome(image_uri(shown), query_maps, pid, camid, hits, occlusion, rerank, depth)

    def prepare(self, image: ImageInput, occlusion: Occlusion | None = None,
                query_index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(the query at the input size, the query as embedded): occluded, when asked, with the
        stress test's rectangle for query number `query_index` (seed `OCCLUSION_SEED`)."""

        clean = self.model.preprocess_config.resize(image)
        if occlusion is None:
            return clean, clean
        rng = query_rng(OCCLUSION_SEED, query_index, occlusion.position, occlusion.area)
        return clean, paint_occluder(clean, occlusion.area, occlusion.position, "rectangle", rng=rng)[0]

    def _hits(self, ranking: Ranking) -> list[Hit]:
        gallery = self.gallery
        return [Hit(rank=place, index=int(index), path=gallery.paths[index], pid=int(gallery.pids[index]),
                    camid=int(gallery.camids[index]), distance=float(distance), match=match)
                for place, (index, distance, match) in
                enumerate(zip(ranking.indices, ranking.distances, ranking.matches), start=1)]

    def _draw(self, query: torch.Tensor, hits: list[Hit]) -> dict[str, str]:
        """Fill in each hit's picture and maps; return the query's maps (one network pass for all)."""

        preprocess = self.model.preprocess_config
        pixels = torch.stack([query] + [self._gallery_pixels(hit.path) for hit in hits])
        maps = activation_maps(self.model.network, preprocess.normalize(pixels).to(self.model.device))
        for row, hit in enumerate(hits, start=1):
            hit.image = image_uri(pixels[row])
            hit.maps = overlay_uris(pixels[row], {branch: values[row] for branch, values in maps.items()})
        return overlay_uris(pixels[0], {branch: values[0] for branch, values in maps.items()})

    def _gallery_pixels(self, path: str) -> torch.Tensor:
        """A gallery image at the input size; a file gone since the gallery was indexed is drawn black."""
        try:
            return self.model.preprocess_config.resize(path)
        except IgoasError:
            preprocess = self.model.preprocess_config
            return torch.zeros(3, preprocess.height, preprocess.width)

    def describe(self) -> dict[str, object]:
        """What the page header says about the model and the gallery."""
        spec = self.model.spec
        return {
            "model": f"{spec.get('name', 'model')} {spec.get('backbone', '')}".strip(),
            "checkpoint": Path(self.model.source).name if self.model.source else "",
            "input": f"{self.model.preprocess_config.height}x{self.model.preprocess_config.width}",
            "gallery": len(self.gallery),
            "index": self.gallery.kind,
            "queries": 0 if self.queries is None else len(self.queries.paths),
        }


def occlusion_positions() -> list[str]:
    """The stress test's positions, for the page's menu."""

    return list(DEFAULT_POSITIONS)



def build_service(
    checkpoint: str | os.PathLike,
    gallery: str | os.PathLike,
    dataset: str | None = None,
    root: str | os.PathLike | None = None,
    queries: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str = "auto",
    precision: str = "fp32",
    backend: str = "pytorch",
    progress: bool = True,
) -> SearchService:
    """Model, gallery and query list for the page.

    `gallery` is an index from `igoas search build`, a features file, a folder of images,
    or with `dataset` a dataset root (its gallery split is embedded). The query list is
    `queries` (a folder) or, with `dataset`, that dataset's split named by `queries`
    (default `query`) under `root`, which defaults to `gallery` when that is a folder.
    """

    model = ReIDModel.from_checkpoint(checkpoint, device=device, precision=precision, backend=backend)
    index = load_gallery(model, gallery, dataset, "gallery", cache_dir, progress)
    root = root if root is not None else (gallery if Path(gallery).is_dir() else None)
    if dataset and root is None:
        raise IgoasError(f"--dataset {dataset}: also pass --root DIR, the dataset's folder (the gallery "
                         f"{gallery} is a file, so it does not say where the query images are)")
    if dataset:
        query_list = dataset_images(dataset, root, str(queries or "query"))
    else:
        query_list = folder_images(queries) if queries is not None else None
    return SearchService(model, index, query_list)
