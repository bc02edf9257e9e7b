"""Painting occluders of an exact area onto images: what the occlusion stress test hides.

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
from typing import Any, Callable

import numpy as np
import torch

from igoas.data.synthetic.occluders import OCCLUDER_KINDS, draw_occluder
from igoas.utils.errors import ConfigError, IgoasError
from igoas.utils.seeding import seed_for

RANDOM_ASPECT_RANGE = (0.5, 2.0)
MIN_SHAPE_SIDE = 32  # pixels: the occluder painters need about this much room for their details

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

    return np.random.default_rng(seed_for(seed, index, zlib.crc32(position.encode()), round(area_percent * 1000)))


def paint_occluder(pixels: torch.Tensor, area_percent: float, position: str, occluder: str = "rectangle",
                   rng: Rng | None = None, fill: str = "random") -> tuple[torch.Tensor, np.ndarray]:
    """Occlude one 3 x H x W image in [0, 1]: (occluded copy, H x W mask with exactly n True pixels)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    mask = occlusion_mask(pixels.shape[-2], pixels.shape[-1], area_percent, position, rng)
    if not mask.any():
        return pixels, mask
    return build_occluder(occluder, fill)(pixels, mask, position, rng)
