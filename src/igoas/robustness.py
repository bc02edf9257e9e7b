"""Occlusion stress test: how retrieval degrades as more of each query is hidden.

Every query image is occluded in pixel space (after the resize, before mean/std
normalisation) by one occluder covering a chosen percentage of the image at a chosen
place; the gallery is left untouched. Each checkpoint is evaluated at every (position,
area) pair, so an occlusion-robust model (IGOAS) and a baseline can be compared on any
dataset.

Exact area. For a requested area of p percent of an H x W input, the occluder covers
exactly n = floor(p / 100 * H * W + 1/2) pixels (round half up). A rectangle with n
pixels does not always exist (n may be prime), so a "rectangle" is a block of full rows
of the chosen width plus, when n is not a multiple of that width, one partial row of the
remaining pixels, centred, on the block's inner side.

Positions: `top` / `bottom` are full-width bands from that edge, `left` / `right`
full-height bands from that side (partial column centred), `random` a block of random
aspect (height/width log-uniform in [1/2, 2], clipped to fit) at a random place.
Occluders: `rectangle` fills the region with one colour (`fill`), `shapes` pastes an
occluder shape of the synthetic generator (bag, pole, car, ...) drawn over the region's
box and then eroded or grown by its own outline until it covers exactly n pixels.

Randomness (fill colour, random position, shape) comes from a generator seeded with
(seed, query index, position, area): the same query gets the same occlusion for every
checkpoint, whichever other areas or positions are run.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from igoas.artifacts.images import load_image
from igoas.errors import ConfigError, IgoasError

DEFAULT_AREAS = (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0)
DEFAULT_POSITIONS = ("top", "bottom", "left", "right", "random")
RANDOM_ASPECT_RANGE = (0.5, 2.0)
MIN_SHAPE_SIDE = 32  # pixels: the occluder painters need about this much room for their details
REPORTED_METRICS = ("R1", "R5", "R10", "mAP", "mINP")

Rng = np.random.Generator
# occluder(pixels 3 x H x W in [0, 1], region mask, position, rng) -> (occluded pixels, final mask)
Occluder = Callable[[torch.Tensor, np.ndarray, str, Rng], tuple[torch.Tensor, np.ndarray]]


# ----------------------------------------------------------------------------- where: exact-count masks
def occluded_pixel_count(area_percent: float, height: int, width: int) -> int:
    """n = floor(p / 100 * H * W + 1/2): pixels an occluder of `area_percent` % covers."""
    if not 0.0 <= area_percent <= 100.0:
        raise ConfigError(f"occluded area must be a percentage in [0, 100], got {area_percent}")
    return int(math.floor(area_percent / 100.0 * height * width + 0.5))


def _block(count: int, rows: int, columns: int) -> np.ndarray:
    """`count` cells of a rows x columns grid filled row by row from row 0; the last,
    partial row is centred."""
    block = np.zeros((rows, columns), dtype=bool)
    full, rest = divmod(count, columns)
    block[:full] = True
    if rest:
        start = (columns - rest) // 2
        block[full, start:start + rest] = True
    return block


def _top(height: int, width: int, count: int, rng: Rng) -> np.ndarray:
    return _block(count, height, width)


def _bottom(height: int, width: int, count: int, rng: Rng) -> np.ndarray:
    return _top(height, width, count, rng)[::-1].copy()


def _left(height: int, width: int, count: int, rng: Rng) -> np.ndarray:
    return _block(count, width, height).T.copy()


def _right(height: int, width: int, count: int, rng: Rng) -> np.ndarray:
    return _left(height, width, count, rng)[:, ::-1].copy()


def _random(height: int, width: int, count: int, rng: Rng) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    if count == 0:
        return mask
    aspect = math.exp(rng.uniform(*np.log(RANDOM_ASPECT_RANGE)))
    # The block must be wide enough to hold `count` pixels in `height` rows, and no wider than the image.
    block_w = min(max(round(math.sqrt(count / aspect)), math.ceil(count / height), 1), width, count)
    block_h = math.ceil(count / block_w)
    top, left = int(rng.integers(0, height - block_h + 1)), int(rng.integers(0, width - block_w + 1))
    block = _block(count, block_h, block_w)
    # The partial row goes on the side facing the image centre, so the block reads as one piece.
    if top + block_h / 2 > height / 2:
        block = block[::-1]
    mask[top:top + block_h, left:left + block_w] = block
    return mask


POSITIONS: dict[str, Callable[[int, int, int, Rng], np.ndarray]] = {
    "top": _top, "bottom": _bottom, "left": _left, "right": _right, "random": _random,
}


def occlusion_mask(height: int, width: int, area_percent: float, position: str, rng: Rng) -> np.ndarray:
    """Boolean H x W mask (True = occluded) of exactly `occluded_pixel_count` pixels at `position`."""
    if position not in POSITIONS:
        raise ConfigError(f"unknown occlusion position {position!r}; choose from {sorted(POSITIONS)}")
    return POSITIONS[position](height, width, occluded_pixel_count(area_percent, height, width), rng)


# ----------------------------------------------------------------------------- what: occluders
def _constant_fill(colour: Callable[[Rng], np.ndarray]) -> Occluder:
    def fill(pixels: torch.Tensor, mask: np.ndarray, position: str, rng: Rng) -> tuple[torch.Tensor, np.ndarray]:
        occluded = pixels.clone()
        hidden = torch.from_numpy(mask)
        occluded[:, hidden] = torch.as_tensor(colour(rng), dtype=pixels.dtype)[:, None]
        return occluded, mask

    return fill


# Rectangle fill colours, as pixel values in [0, 1]; "random" draws one colour per query.
FILLS: dict[str, Callable[[Rng], np.ndarray]] = {
    "random": lambda rng: rng.uniform(0.0, 1.0, size=3),
    "black": lambda rng: np.zeros(3),
    "grey": lambda rng: np.full(3, 0.5),
}


# The point of the occluder's box that stays put while the box grows: top bands grow down, ...
SHAPE_ANCHORS = {"top": (0.0, 0.5), "bottom": (1.0, 0.5), "left": (0.5, 0.0), "right": (0.5, 1.0),
                 "random": (0.5, 0.5)}
SHAPE_FIT_ROUNDS = 3


def _paste_shape(pixels: torch.Tensor, mask: np.ndarray, position: str, rng: Rng) -> tuple[torch.Tensor, np.ndarray]:
    """An occluder shape drawn over the region's box, the box grown (up to the image) while
    the shape covers fewer pixels than the region, then eroded or grown along its outline to
    exactly the region's pixel count."""
    from igoas.data.synthetic.occluders import OCCLUDER_KINDS, draw_occluder

    count = int(mask.sum())
    if count == 0:
        return pixels, mask
    height, width = mask.shape
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    box = (int(rows[0]), int(cols[0]), int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1)
    kind = OCCLUDER_KINDS[int(rng.integers(len(OCCLUDER_KINDS)))]
    shape_seed = int(rng.integers(2**63))
    for attempt in range(SHAPE_FIT_ROUNDS):
        drawn = _draw_shape(draw_occluder, kind, box[2], box[3], np.random.default_rng(shape_seed))
        colours, alpha = _occluder_layers(drawn, box[2], box[3])
        covered = alpha >= 0.5
        if covered.sum() >= count or box[2:] == (height, width) or attempt == SHAPE_FIT_ROUNDS - 1:
            break
        box = _grown(box, count / max(int(covered.sum()), 1), SHAPE_ANCHORS.get(position, (0.5, 0.5)), height, width)
    top, left, box_h, box_w = box
    canvas = np.zeros((height, width), dtype=bool)
    canvas[top:top + box_h, left:left + box_w] = covered
    chosen = _exact_count(canvas, count, (top + box_h / 2, left + box_w / 2))
    # Pixels the shape grew into take its average colour; the drawn shape keeps its own.
    average = colours[:, covered].mean(axis=1) if covered.any() else colours.reshape(3, -1).mean(axis=1)
    paint = np.broadcast_to(average[:, None, None], (3, height, width)).copy()
    inside = paint[:, top:top + box_h, left:left + box_w]
    paint[:, top:top + box_h, left:left + box_w] = np.where(covered[None], colours, inside)
    occluded = pixels.clone()
    hidden = torch.from_numpy(chosen)
    occluded[:, hidden] = torch.from_numpy(paint)[:, hidden].to(pixels.dtype)
    return occluded, chosen


def _grown(box: tuple[int, int, int, int], factor: float, anchor: tuple[float, float], height: int,
           width: int) -> tuple[int, int, int, int]:
    """`box` (top, left, h, w) with its area times `factor`, kept inside the image, its anchor point fixed."""
    top, left, box_h, box_w = box
    area = box_h * box_w * factor
    new_h = min(height, max(box_h, round(box_h * math.sqrt(factor))))
    new_w = min(width, max(box_w, math.ceil(area / new_h)))
    if new_w == width:
        new_h = min(height, max(new_h, math.ceil(area / width)))
    fixed_y, fixed_x = top + anchor[0] * box_h, left + anchor[1] * box_w
    new_top = min(max(round(fixed_y - anchor[0] * new_h), 0), height - new_h)
    new_left = min(max(round(fixed_x - anchor[1] * new_w), 0), width - new_w)
    return new_top, new_left, new_h, new_w


def _draw_shape(draw: Callable[..., np.ndarray], kind: str, height: int, width: int, rng: Rng) -> np.ndarray:
    """Draw at a size where every part of the shape is at least a pixel, then shrink to the box.

    Thin boxes (a 5 % band is 3 rows at 64 x 32) are too small for the painters' details.
    """
    from PIL import Image

    scale = max(1, math.ceil(MIN_SHAPE_SIDE / min(height, width)))
    drawn = draw(kind, height * scale, width * scale, rng)
    if scale == 1:
        return drawn
    return np.asarray(Image.fromarray(drawn, "RGBA").resize((width, height), Image.Resampling.BOX))


def _occluder_layers(drawn: Any, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(3 x h x w colours in [0, 1], h x w opacity in [0, 1]) from the generator's RGBA uint8 drawing."""
    array = np.asarray(drawn, dtype=np.float32) / 255.0
    if array.ndim != 3 or array.shape != (height, width, 4):
        raise IgoasError(f"occluder drawing has shape {array.shape}; expected {height} x {width} x 4 (RGBA uint8)")
    return np.ascontiguousarray(array[..., :3].transpose(2, 0, 1)), array[..., 3]


def _exact_count(shape: np.ndarray, count: int, centre: tuple[float, float]) -> np.ndarray:
    """The `count` pixels deepest inside `shape` (eroding it) or, when it is smaller, the
    shape plus the pixels nearest to it (growing it); ties go to pixels nearer `centre`."""
    height, width = shape.shape
    # Box sums at doubling radii (from one integral image) add up to a score that falls off
    # smoothly with the distance to the outline, inside and outside the shape.
    integral = np.zeros((height + 1, width + 1))
    integral[1:, 1:] = shape.astype(np.float64).cumsum(0).cumsum(1)
    rows, cols = np.arange(height), np.arange(width)
    closeness = np.zeros((height, width))
    radius = 1
    while radius <= max(height, width):
        y0, y1 = np.clip(rows - radius, 0, height)[:, None], np.clip(rows + radius + 1, 0, height)[:, None]
        x0, x1 = np.clip(cols - radius, 0, width)[None, :], np.clip(cols + radius + 1, 0, width)[None, :]
        box_sum = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
        closeness += box_sum / (2 * radius + 1) ** 2
        radius *= 2
    closeness /= max(float(closeness.max()), 1e-12)
    yy, xx = np.mgrid[0:height, 0:width]
    distance = np.hypot(yy + 0.5 - centre[0], xx + 0.5 - centre[1]) / math.hypot(height, width)
    score = shape + closeness - 1e-3 * distance
    order = np.argsort(-score.ravel(), kind="stable")[:count]
    chosen = np.zeros(height * width, dtype=bool)
    chosen[order] = True
    return chosen.reshape(height, width)


# name -> builder taking the rectangle fill; an occluder returns (occluded pixels, final mask).
OCCLUDERS: dict[str, Callable[[str], Occluder]] = {
    "rectangle": lambda fill: _constant_fill(FILLS[fill]),
    "shapes": lambda fill: _paste_shape,
}


def build_occluder(name: str, fill: str = "random") -> Occluder:
    """`occluder(pixels, mask, position, rng) -> (occluded pixels, final mask)` by name."""
    if fill not in FILLS:
        raise ConfigError(f"unknown occluder fill {fill!r}; choose from {sorted(FILLS)}")
    if name not in OCCLUDERS:
        raise ConfigError(f"unknown occluder {name!r}; choose from {sorted(OCCLUDERS)}")
    return OCCLUDERS[name](fill)


def query_rng(seed: int, index: int, position: str, area_percent: float) -> Rng:
    """The generator of one query's occlusion: independent of checkpoint and of the other settings run."""
    from igoas.engine.rng import seed_for

    return np.random.default_rng(seed_for(seed, index, zlib.crc32(position.encode()), round(area_percent * 1000)))


def occlude(pixels: torch.Tensor, area_percent: float, position: str, occluder: str = "rectangle",
            rng: Rng | None = None, fill: str = "random") -> tuple[torch.Tensor, np.ndarray]:
    """Occlude one 3 x H x W image in [0, 1]: (occluded copy, H x W mask with exactly n True pixels)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    mask = occlusion_mask(pixels.shape[-2], pixels.shape[-1], area_percent, position, rng)
    if not mask.any():
        return pixels, mask
    return build_occluder(occluder, fill)(pixels, mask, position, rng)


# ----------------------------------------------------------------------------- the images fed to the model
class OccludedImages(torch.utils.data.Dataset):
    """Samples resized by a checkpoint's `Preprocess`, occluded in pixel space, then normalised.

    Items are the prepared dicts `embed` reads (image, pid, camid, path, index) plus
    `occluded_pixels`, the number of pixels the occluder covers. Pixels outside the
    occluder (all of them at area 0) are exactly those evaluation feeds the network.
    """

    def __init__(self, samples: Sequence[Any], preprocess: Any, area_percent: float = 0.0, position: str = "top",
                 occluder: str = "rectangle", seed: int = 0, fill: str = "random") -> None:
        self.samples, self.preprocess = list(samples), preprocess
        self.area_percent, self.position, self.occluder, self.seed, self.fill = (
            area_percent, position, occluder, seed, fill)
        _check_settings([area_percent], [position], occluder, fill)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        decoded = load_image(sample.path)
        image = self.preprocess.prepare(decoded)  # the visible pixels: exactly as evaluation reads them
        pixels = self.preprocess.resize(decoded)
        occluded, mask = occlude(pixels, self.area_percent, self.position, self.occluder,
                                 query_rng(self.seed, index, self.position, self.area_percent), self.fill)
        covered = int(mask.sum())
        if covered:
            image = torch.where(torch.from_numpy(mask), self.preprocess.normalize(occluded[None])[0], image)
        return {"image": image, "pid": sample.pid, "camid": sample.camid, "path": str(sample.path), "index": index,
                "occluded_pixels": covered}


# ----------------------------------------------------------------------------- the test
@dataclass
class StressRecord:
    """Metrics (percent) of one checkpoint with its queries occluded at one position and area."""

    checkpoint: str
    position: str
    area: float
    occluded_percent: float
    R1: float
    R5: float
    R10: float
    mAP: float
    mINP: float
    num_queries: int


@dataclass
class StressTestResult:
    """Every record of a stress test and the settings that produced it."""

    records: list[StressRecord]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"settings": dict(self.settings), "results": [asdict(record) for record in self.records]}

    def table(self) -> str:
        """An aligned text table: one line per (checkpoint, position, area)."""
        name_width = max([len("checkpoint")] + [len(r.checkpoint) for r in self.records])
        lines = [f"{'checkpoint':<{name_width}}  {'position':<8}  {'area%':>5}  {'R1':>5}  {'mAP':>5}  {'mINP':>5}"]
        for r in self.records:
            lines.append(f"{r.checkpoint:<{name_width}}  {r.position:<8}  {r.area:5.1f}  {r.R1:5.1f}  {r.mAP:5.1f}  "
                         f"{r.mINP:5.1f}")
        return "\n".join(lines)


def occlusion_stress_test(
    checkpoints: Sequence[Any] | Mapping[str, Any],
    dataset: Any,
    areas: Sequence[float] = DEFAULT_AREAS,
    positions: Sequence[str] = DEFAULT_POSITIONS,
    *,
    occluder: str = "rectangle",
    fill: str = "random",
    seed: int = 0,
    query_set: str = "query",
    metric: str = "euclidean",
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    flip: bool = False,
    precision: str = "fp32",
    channels_last: bool = False,
    log: Callable[[str], None] | None = None,
) -> StressTestResult:
    """Evaluate each checkpoint with the queries of `dataset` occluded at every (position, area).

    `checkpoints` are paths or loaded checkpoint payloads, or a {label: checkpoint}
    mapping (labels default to the file names). `areas` are percentages of the image;
    area 0 is evaluated once per checkpoint and reported for every position, so each
    curve starts from the clean score. `query_set` is "query" or the name of one of the
    dataset's extra query sets. The gallery features are computed once per checkpoint.
    """
    from igoas.artifacts.checkpoint import model_from_checkpoint
    from igoas.artifacts.preprocess import Preprocess
    from igoas.speed import resolve_precision
    from igoas.engine.embedding import Runtime, embed
    from igoas.evaluation import evaluate_features

    labelled = _labelled(checkpoints)
    queries = query_samples(dataset, query_set)
    areas, positions = [float(a) for a in areas], list(positions)
    _check_settings(areas, positions, occluder, fill)
    runtime = Runtime(torch.device(device), resolve_precision(precision, device), channels_last)

    def features(model: torch.nn.Module, samples: Sequence[Any], preprocess: Preprocess, area: float,
                 position: str) -> tuple[Any, float]:
        images = OccludedImages(samples, preprocess, area, position, occluder, seed, fill)
        extracted = embed(model, images, runtime=runtime, flip=flip, batch_size=batch_size, num_workers=num_workers)
        covered = occluded_pixel_count(area, preprocess.height, preprocess.width)
        return extracted, 100.0 * covered / (preprocess.height * preprocess.width)

    records: list[StressRecord] = []
    for label, checkpoint in labelled.items():
        model, payload = model_from_checkpoint(checkpoint)
        preprocess = Preprocess.resolve(payload, label)
        gallery, _ = features(model, dataset.gallery, preprocess, 0.0, positions[0])
        clean: tuple[dict[str, float], float] | None = None
        for position in positions:
            for area in areas:
                if area == 0.0 and clean is not None:
                    scores, covered = clean
                else:
                    query, covered = features(model, queries, preprocess, area, position)
                    result = evaluate_features(query.embeddings, gallery.embeddings, query.pids, gallery.pids,
                                               query.camids, gallery.camids, metric=metric)
                    scores = result.to_dict()
                    if area == 0.0:
                        clean = (scores, covered)
                metrics = {name: float(scores.get(name, float("nan"))) for name in REPORTED_METRICS}
                records.append(StressRecord(checkpoint=label, position=position, area=area, occluded_percent=covered,
                                            num_queries=len(queries), **metrics))
                if log is not None:
                    log(f"{label}  {position:<6}  area {area:4.1f}%  R1 {records[-1].R1:5.1f}  mAP {records[-1].mAP:5.1f}")
    from igoas.provenance import checkpoint_identity, software_versions

    settings = {"dataset": getattr(dataset, "name", None), "root": _root(dataset), "query_set": query_set,
                "occluder": occluder, "fill": fill if occluder == "rectangle" else None, "seed": seed,
                "metric": metric, "areas": areas, "positions": positions, "flip": flip, "precision": precision,
                "checkpoints": {label: checkpoint_identity(checkpoint) for label, checkpoint in labelled.items()},
                "versions": software_versions()}
    return StressTestResult(records, settings)


def _root(dataset: Any) -> str | None:
    root = getattr(dataset, "root", None)
    return str(root) if root is not None else None


def write_stress_test(result: StressTestResult, out_dir: str | Path) -> dict[str, Path]:
    """Write `robustness.json` (settings and every record) and `robustness.png` (the curves) to `out_dir`."""
    from igoas.fileio import write_json
    from igoas.viz.robustness_figure import plot_robustness

    out_dir = Path(out_dir)
    data = result.to_dict()
    json_path = write_json(out_dir / "robustness.json", data)
    return {"json": json_path, "figure": plot_robustness(data["results"], out_dir / "robustness.png")}


def _check_settings(areas: Sequence[float], positions: Sequence[str], occluder: str, fill: str) -> None:
    """Fail before any model runs when a setting is wrong (each check raises ConfigError naming it)."""
    if not areas or not positions:
        raise ConfigError("the stress test needs at least one area and one position")
    for area in areas:
        occluded_pixel_count(area, 1, 1)
    for position in positions:
        occlusion_mask(1, 1, 0.0, position, np.random.default_rng(0))
    build_occluder(occluder, fill)


def _labelled(checkpoints: Sequence[Any] | Mapping[str, Any]) -> dict[str, Any]:
    """{label: checkpoint}; file stems by default, made unique with their parent folder."""
    if isinstance(checkpoints, Mapping) and not _is_payload(checkpoints):
        labelled = {str(label): value for label, value in checkpoints.items()}
    else:
        items = [checkpoints] if _is_payload(checkpoints) else list(checkpoints)
        names = [Path(item).stem if isinstance(item, (str, Path)) else f"model{index}" for index, item in
                 enumerate(items)]
        if len(set(names)) < len(names):
            names = [f"{Path(item).parent.name}/{Path(item).stem}" if isinstance(item, (str, Path)) else name
                     for item, name in zip(items, names)]
        if len(set(names)) < len(names):
            names = [f"{index}:{name}" for index, name in enumerate(names)]
        labelled = dict(zip(names, items))
    if not labelled:
        raise ConfigError("the stress test needs at least one checkpoint")
    return labelled


def _is_payload(value: Any) -> bool:
    return isinstance(value, Mapping) and "model_spec" in value


def query_samples(dataset: Any, query_set: str) -> list[Any]:
    """The samples of `query_set`: "query" or the name of one of the dataset's extra query sets."""
    if query_set == "query":
        samples = list(dataset.query)
    else:
        extra = dict(getattr(dataset, "extra_queries", {}) or {})
        if query_set not in extra:
            raise ConfigError(f"dataset {getattr(dataset, 'name', '')!r} has no query set {query_set!r}; "
                              f"choose from {['query'] + sorted(extra)}")
        samples = list(extra[query_set])
    if not samples:
        raise IgoasError(f"dataset {getattr(dataset, 'name', '')!r}: the {query_set!r} set is empty")
    return samples


def parse_areas(text: str) -> list[float]:
    """"0,10,20" -> [0, 10, 20]; "0,10,...,60" expands the step of the first two values up to the last."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        if "..." in parts:
            if parts.index("...") != 2 or len(parts) != 4:
                raise ValueError
            first, second, last = float(parts[0]), float(parts[1]), float(parts[3])
            step = second - first
            if step <= 0:
                raise ValueError
            return [first + i * step for i in range(int(math.floor((last - first) / step + 1e-9)) + 1)]
        return [float(part) for part in parts]
    except ValueError:
        raise ConfigError(f"cannot read areas {text!r}: give percentages like '0,10,20' or '0,10,...,60'") from None
