"""Occluders (cars, poles, trees, boxes, bags, railings, other pedestrians) and where
they stand in front of a person.

`draw_occluder` is public: the occlusion stress test pastes the same shapes onto real
query images. `place_occluder` places one occluder in front of a rendered person so that it
hides a chosen fraction of the body, at the positions occluders take in street footage:
objects on the ground hide the lower body, poles, trees and passers-by hide a side.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from igoas.data.synthetic.appearance import VIEWPOINTS, draw_person, sample_identity
from igoas.utils.errors import ConfigError

OCCLUDER_KINDS = ("car", "pole", "tree", "box", "bag", "railing", "pedestrian")
KIND_WEIGHTS = {"car": 0.15, "pole": 0.12, "tree": 0.13, "box": 0.15, "bag": 0.10, "railing": 0.15, "pedestrian": 0.20}
CAR_COLOURS = ((200, 200, 204), (30, 30, 34), (150, 20, 24), (40, 60, 120), (120, 124, 130), (230, 230, 226), (60, 80, 60))


def _rgba(colour, alpha: int = 255) -> tuple[int, int, int, int]:
    return tuple(int(np.clip(c, 0, 255)) for c in colour) + (alpha,)


def _vary(rng: np.random.Generator, colour, amount: float = 12.0):
    return tuple(c + rng.normal(0, amount) for c in colour)


def _car(layer: Image.Image, rng: np.random.Generator) -> None:
    draw, (w, h) = ImageDraw.Draw(layer), layer.size
    paint = _vary(rng, CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))])
    glass = _rgba((40 + rng.uniform(0, 30), 50 + rng.uniform(0, 30), 64 + rng.uniform(0, 30)))
    cabin_left, cabin_right = rng.uniform(0.1, 0.3) * w, rng.uniform(0.65, 0.85) * w
    draw.polygon([(cabin_left, 0.42 * h), (cabin_left + 0.12 * w, 0), (cabin_right - 0.08 * w, 0),
                  (cabin_right, 0.42 * h)], fill=_rgba(paint))
    draw.polygon([(cabin_left + 0.03 * w, 0.4 * h), (cabin_left + 0.13 * w, 0.06 * h),
                  (cabin_right - 0.09 * w, 0.06 * h), (cabin_right - 0.02 * w, 0.4 * h)], fill=glass)
    draw.rounded_rectangle([0, 0.38 * h, w - 1, 0.88 * h], radius=max(1, int(0.08 * h)), fill=_rgba(paint))
    draw.line([(0, 0.62 * h), (w, 0.62 * h)], fill=_rgba(np.array(paint) * 0.7), width=max(1, h // 40))
    radius = min(0.16 * h, 0.1 * w)
    for x in (0.18 * w, 0.82 * w):
        draw.ellipse([x - radius, 0.86 * h - radius, x + radius, 0.86 * h + radius], fill=_rgba((22, 22, 24)))
        draw.ellipse([x - radius / 2, 0.86 * h - radius / 2, x + radius / 2, 0.86 * h + radius / 2],
                     fill=_rgba((150, 150, 155)))


def _pole(layer: Image.Image, rng: np.random.Generator) -> None:
    draw, (w, h) = ImageDraw.Draw(layer), layer.size
    metal = _vary(rng, ((90, 94, 98), (40, 60, 48), (32, 32, 34), (150, 150, 150))[int(rng.integers(4))])
    draw.rectangle([0, 0, w - 1, h - 1], fill=_rgba(metal))
    draw.rectangle([w * 0.25, 0, w * 0.4, h], fill=_rgba(np.array(metal) * 1.35))
    for _ in range(int(rng.integers(0, 3))):  # stickers, bands
        y = rng.uniform(0.2, 0.8) * h
        draw.rectangle([0, y, w, y + rng.uniform(0.02, 0.05) * h], fill=_rgba(rng.integers(40, 230, 3)))


def _tree(layer: Image.Image, rng: np.random.Generator) -> None:
    draw, (w, h) = ImageDraw.Draw(layer), layer.size
    bark = _vary(rng, (88, 62, 42))
    trunk_x = rng.uniform(0.35, 0.6) * w
    trunk_w = rng.uniform(0.18, 0.3) * w
    draw.rectangle([trunk_x - trunk_w / 2, 0.35 * h, trunk_x + trunk_w / 2, h], fill=_rgba(bark))
    leaf = np.array(_vary(rng, (52, 104, 46), 10))
    for _ in range(int(rng.integers(9, 15))):
        x, y = rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.5) * h
        r = rng.uniform(0.16, 0.3) * min(w, h * 0.7)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_rgba(leaf * rng.uniform(0.75, 1.25)))


def _box(layer: Image.Image, rng: np.random.Generator) -> None:
    draw, (w, h) = ImageDraw.Draw(layer), layer.size
    colour = _vary(rng, ((170, 128, 82), (184, 148, 100), (46, 80, 150), (60, 120, 70), (140, 140, 140))[int(rng.integers(5))])
    stacked = h > 1.3 * w and rng.random() < 0.7
    splits = [0.0, rng.uniform(0.4, 0.6), 1.0] if stacked else [0.0, 1.0]
    for top, bottom in zip(splits[:-1], splits[1:]):
        shade = rng.uniform(0.85, 1.1)
        draw.rectangle([0, top * h, w - 1, bottom * h - 1], fill=_rgba(np.array(colour) * shade),
                       outline=_rgba(np.array(colour) * 0.6), width=max(1, w // 40))
        draw.rectangle([0.45 * w, top * h, 0.55 * w, (top + 0.3 * (bottom - top)) * h],
                       fill=_rgba(np.array(colour) * 1.25))


def _bag(layer: Image.Image, rng: np.random.Generator) -> None:
    draw, (w, h) = ImageDraw.Draw(layer), layer.size
    colour = _vary(rng, ((30, 30, 34), (120, 30, 36), (40, 60, 110), (90, 90, 96), (150, 110, 70))[int(rng.integers(5))])
    handle = max(2, int(0.05 * w))
    draw.rectangle([0.3 * w, 0, 0.7 * w, 0.16 * h], outline=_rgba(np.array(colour) * 0.7), width=handle)
    draw.rounded_rectangle([0, 0.12 * h, w - 1, 0.96 * h], radius=max(1, int(0.1 * w)), fill=_rgba(colour))
    for x in np.linspace(0.25, 0.75, 3) * w:
        draw.line([(x, 0.18 * h), (x, 0.9 * h)], fill=_rgba(np.array(colour) * 0.8), width=max(1, w // 30))
    for x in (0.15 * w, 0.85 * w):
        # wheels: at small sizes the box shrinks to the last row rather than inverting
        draw.ellipse([x - 0.06 * w, min(0.94 * h, h - 1), x + 0.06 * w, h - 1], fill=_rgba((20, 20, 20)))


def _railing(layer: Image.Image, rng: np.random.Generator) -> None:
    draw, (w, h) = ImageDraw.Draw(layer), layer.size
    metal = _rgba(_vary(rng, ((70, 74, 78), (150, 150, 155), (40, 70, 50), (30, 30, 32))[int(rng.integers(4))]))
    if rng.random() < 0.35:  # a construction barrier: a striped panel on legs
        draw.rectangle([0, 0, w - 1, 0.55 * h], fill=_rgba((230, 230, 230)))
        stripe = h * 0.22
        for x in np.arange(-h, w + h, 2 * stripe):
            draw.polygon([(x, 0), (x + stripe, 0), (x + stripe + 0.55 * h, 0.55 * h), (x + 0.55 * h, 0.55 * h)],
                         fill=_rgba((200, 40, 36)))
        for x in (0.1 * w, 0.85 * w):
            draw.rectangle([x, 0.55 * h, x + 0.05 * w, h], fill=metal)
        return
    rail = max(2, int(0.07 * h))
    for y in (0, 0.5 * h - rail / 2, h - rail):
        draw.rectangle([0, y, w, y + rail], fill=metal)
    spacing = rng.uniform(0.1, 0.18) * h
    bar = max(2.0, spacing * rng.uniform(0.35, 0.6))
    for x in np.arange(rng.uniform(0, spacing), w, spacing):
        draw.rectangle([x, 0, x + bar, h], fill=metal)


def _pedestrian(layer: Image.Image, rng: np.random.Generator) -> None:
    w, h = layer.size
    view = VIEWPOINTS[int(rng.integers(len(VIEWPOINTS)))]
    draw_person(layer, sample_identity(rng), w / 2, 0, h, view, float(rng.uniform(0, 2 * np.pi)))


PAINTERS: dict[str, Callable[[Image.Image, np.random.Generator], None]] = {
    "car": _car, "pole": _pole, "tree": _tree, "box": _box, "bag": _bag, "railing": _railing,
    "pedestrian": _pedestrian,
}


def draw_occluder(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """An occluder of `kind` filling a height x width box: RGBA uint8 (alpha 0 = see-through)."""
    if kind not in PAINTERS:
        raise ConfigError(f"unknown occluder kind {kind!r}; choose one of {', '.join(OCCLUDER_KINDS)}.")
    layer = Image.new("RGBA", (max(1, int(width)), max(1, int(height))), (0, 0, 0, 0))
    PAINTERS[kind](layer, rng)
    return np.asarray(layer)


@dataclass(frozen=True)
class Occlusion:
    """One placed occluder: its kind, box (x, y, width, height) on the canvas, pixels and
    the fraction of the person's body it hides."""

    kind: str
    box: tuple[int, int, int, int]
    rgba: np.ndarray
    fraction: float


def coverage(person_mask: np.ndarray, box: tuple[int, int, int, int], rgba: np.ndarray) -> float:
    """Fraction of the person's pixels under an opaque occluder pixel."""
    x, y, w, h = box
    H, W = person_mask.shape
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 <= x0 or y1 <= y0:
        return 0.0
    opaque = rgba[y0 - y:y1 - y, x0 - x:x1 - x, 3] > 127
    return float((person_mask[y0:y1, x0:x1] & opaque).sum()) / max(1, int(person_mask.sum()))


Layout = Callable[[float], tuple[int, int, int, int]]


def _layout(kind: str, bbox: tuple[int, int, int, int], canvas: tuple[int, int], rng: np.random.Generator) -> Layout:
    """For a kind, a function from extent s in [0, 1] to the occluder's box, the coverage
    growing with s: ground objects grow upwards from the feet, side ones inwards."""
    px0, py0, px1, py1 = bbox
    W, H = canvas
    pw, ph, pcx = px1 - px0, py1 - py0, (px0 + px1) / 2
    ground = py1 + rng.uniform(0.0, 0.04) * H

    def band(x: float, width: float, bottom: float) -> Layout:
        return lambda s: (int(x), int(bottom - s * ph * 1.05), int(width), max(1, int(s * ph * 1.05)))

    side = -1 if rng.random() < 0.5 else 1
    if kind == "car":
        width = W * rng.uniform(1.3, 2.0)
        return band(rng.uniform(W - width, 0), width, H + rng.uniform(0, 0.08) * H)
    if kind in ("box", "bag"):
        width = pw * (rng.uniform(0.9, 1.6) if kind == "box" else rng.uniform(0.55, 0.9))
        return band(pcx + rng.uniform(-0.3, 0.3) * pw - width / 2, width, ground)
    if kind == "railing":
        return band(-4, W + 8, ground)
    if kind == "pole":
        centre = pcx + rng.uniform(-0.35, 0.35) * pw
        return lambda s: (int(centre - s * pw * 0.5), 0, max(1, int(s * pw)), H)
    if kind == "tree":
        outer = (px0 if side < 0 else px1) + side * rng.uniform(0.3, 0.8) * pw
        top = -rng.uniform(0.0, 0.1) * H

        def tree(s: float) -> tuple[int, int, int, int]:
            inner = (px0 if side < 0 else px1) - side * s * pw * 1.1
            return (int(min(outer, inner)), int(top), max(1, int(abs(outer - inner))), int(H - top))
        return tree
    height = ph * rng.uniform(1.0, 1.15)  # a passer-by nearer the camera looks taller
    width = height * 0.42
    bottom = py1 + rng.uniform(0.0, 0.06) * H
    start = (px0 if side < 0 else px1) + side * width * 0.5
    return lambda s: (int(start + (pcx - start) * s - width / 2), int(bottom - height), int(width), int(height))


def place_occluder(person_mask: np.ndarray, rng: np.random.Generator, low: float = 0.2, high: float = 0.6,
            kinds: tuple[str, ...] = OCCLUDER_KINDS) -> Occlusion:
    """Place an occluder hiding a random fraction in [low, high] of the person's body.

    The extent of each kind is found by bisection on the measured coverage (occluders have
    holes and odd shapes, so the fraction is measured, not assumed). A kind that cannot
    reach the range at this pose (a sparse railing, say) gives way to another; a box on
    the ground always can, so it comes last.
    """
    rows, cols = np.nonzero(person_mask)
    bbox = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    canvas = (person_mask.shape[1], person_mask.shape[0])
    target = rng.uniform(low + 0.02, high - 0.02)
    weights = np.array([KIND_WEIGHTS[k] for k in kinds])
    candidates = [kinds[i] for i in rng.choice(len(kinds), size=3, p=weights / weights.sum())] + ["box"]
    fallback: Occlusion | None = None
    for kind in candidates:
        layout, shape_seed = _layout(kind, bbox, canvas, rng), int(rng.integers(2**63))
        best, lo, hi = None, 0.0, 1.0
        for _ in range(12):
            s = (lo + hi) / 2
            box = layout(s)
            rgba = draw_occluder(kind, box[3], box[2], np.random.default_rng(shape_seed))
            found = Occlusion(kind, box, rgba, coverage(person_mask, box, rgba))
            if best is None or abs(found.fraction - target) < abs(best.fraction - target):
                best = found
            if abs(found.fraction - target) < 0.015:
                break
            lo, hi = (s, hi) if found.fraction < target else (lo, s)
        if low <= best.fraction <= high:
            return best
        if fallback is None or abs(best.fraction - target) < abs(fallback.fraction - target):
            fallback = best
    return fallback
