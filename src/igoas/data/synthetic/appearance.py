"""Who a synthetic pedestrian is (appearance attributes) and how they are drawn.

An identity is a set of attributes drawn from small shared palettes, weighted towards
the dark, plain clothes most people wear, so many identities share their top or their
trousers and only the combination (top + bottom + shoes + bag + hair + build) tells them
apart. Hiding part of the body therefore removes part of what distinguishes a person,
which is what makes occlusion hurt. Views differ the way real ones do: a backpack shows
from the back (only its straps from the front), a logo or an open jacket from the front.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw

RGB = tuple[int, int, int]

# name -> (colour, weight); the weights follow what street clothing looks like.
TOPS = {
    "black": ((34, 34, 38), 5), "white": ((232, 232, 228), 4), "grey": ((128, 128, 132), 4),
    "navy": ((32, 42, 88), 3), "blue": ((52, 92, 168), 2), "light_blue": ((150, 188, 222), 2),
    "red": ((168, 36, 42), 2), "green": ((42, 108, 62), 1.5), "yellow": ((218, 188, 62), 1),
    "pink": ((218, 142, 168), 1), "brown": ((108, 74, 50), 1.5), "beige": ((198, 178, 140), 2),
    "purple": ((98, 60, 128), 1), "orange": ((218, 118, 42), 1),
}
BOTTOMS = {
    "black": ((30, 30, 34), 5), "dark_grey": ((70, 70, 76), 3), "grey": ((132, 132, 136), 2),
    "navy": ((34, 40, 78), 3), "jeans": ((62, 86, 128), 5), "light_jeans": ((122, 150, 186), 2),
    "khaki": ((178, 160, 116), 2), "brown": ((96, 68, 48), 1.5), "white": ((226, 226, 222), 1),
    "beige": ((196, 180, 146), 1.5),
}
SHOES = {"white": ((230, 230, 230), 4), "black": ((28, 28, 30), 5), "grey": ((120, 120, 124), 2),
         "brown": ((90, 60, 40), 2), "red": ((170, 40, 40), 1), "blue": ((50, 80, 160), 1)}
HAIR = {"black": ((24, 22, 20), 5), "dark_brown": ((58, 40, 28), 4), "brown": ((108, 74, 46), 2),
        "blonde": ((198, 170, 112), 1.5), "grey": ((150, 150, 150), 1), "auburn": ((136, 62, 32), 1)}
SKIN = {"light": ((238, 204, 178), 3), "fair": ((224, 180, 146), 3), "medium": ((190, 140, 100), 2),
        "tan": ((142, 98, 66), 1.5), "dark": ((96, 66, 46), 1.5)}
ACCESSORIES = {"black": ((32, 32, 34), 4), "brown": ((112, 70, 40), 2), "grey": ((110, 110, 116), 2),
               "navy": ((36, 46, 92), 2), "red": ((170, 44, 44), 1), "green": ((50, 100, 60), 1),
               "beige": ((196, 176, 138), 1)}
TOP_PATTERNS = {"plain": 5, "stripes": 1.5, "two_tone": 1.5, "open_jacket": 2}
BOTTOM_KINDS = {"trousers": 6, "shorts": 2, "skirt": 1.5}
HAIR_STYLES = {"short": 5, "long": 3, "cropped": 1.5}
BAGS = {"none": 4.5, "backpack": 2.5, "shoulder_bag": 1.5, "handbag": 1.5}
HATS = {"none": 7.5, "cap": 1.5, "beanie": 1}
LOGOS = {"none": 6, "circle": 1, "square": 1, "triangle": 1}
VIEWPOINTS = ("front", "back", "left", "right")


def _choice(rng: np.random.Generator, table: dict) -> str:
    names = list(table)
    weights = np.array([v[1] if isinstance(v, tuple) else v for v in table.values()], dtype=float)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _jitter(rng: np.random.Generator, colour: RGB, amount: float = 7.0) -> RGB:
    """Per-identity shade of a palette colour: same name, not quite the same cloth."""
    return tuple(int(np.clip(c + rng.normal(0, amount), 0, 255)) for c in colour)


@dataclass(frozen=True)
class Identity:
    """The appearance attributes of one synthetic person (colours already per-identity)."""

    labels: dict  # attribute name -> palette/kind name, recorded in meta.json
    skin: RGB
    hair: RGB
    top: RGB
    top_second: RGB
    logo_colour: RGB
    bottom: RGB
    shoes: RGB
    bag_colour: RGB
    hat_colour: RGB
    build: float  # body width factor
    leg_ratio: float  # fraction of the height below the hips
    head_scale: float

    def key(self) -> tuple:
        """The categorical attributes; two identities must differ in at least one."""
        return tuple(sorted(self.labels.items()))


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one identity's attributes."""
    labels = {
        "skin": _choice(rng, SKIN), "hair": _choice(rng, HAIR), "hair_style": _choice(rng, HAIR_STYLES),
        "top": _choice(rng, TOPS), "top_pattern": _choice(rng, TOP_PATTERNS), "top_second": _choice(rng, TOPS),
        "sleeves": "long" if rng.random() < 0.6 else "short", "logo": _choice(rng, LOGOS),
        "logo_colour": _choice(rng, TOPS), "bottom": _choice(rng, BOTTOMS), "bottom_kind": _choice(rng, BOTTOM_KINDS),
        "shoes": _choice(rng, SHOES), "bag": _choice(rng, BAGS), "bag_colour": _choice(rng, ACCESSORIES),
        "hat": _choice(rng, HATS), "hat_colour": _choice(rng, ACCESSORIES),
    }
    if labels["top_pattern"] == "open_jacket":
        labels["logo"] = "none"  # the inner shirt is what shows at the front
    return Identity(
        labels=labels,
        skin=_jitter(rng, SKIN[labels["skin"]][0], 5), hair=_jitter(rng, HAIR[labels["hair"]][0], 5),
        top=_jitter(rng, TOPS[labels["top"]][0]), top_second=_jitter(rng, TOPS[labels["top_second"]][0]),
        logo_colour=_jitter(rng, TOPS[labels["logo_colour"]][0]), bottom=_jitter(rng, BOTTOMS[labels["bottom"]][0]),
        shoes=_jitter(rng, SHOES[labels["shoes"]][0]), bag_colour=_jitter(rng, ACCESSORIES[labels["bag_colour"]][0]),
        hat_colour=_jitter(rng, ACCESSORIES[labels["hat_colour"]][0]),
        build=float(rng.uniform(0.85, 1.15)), leg_ratio=float(rng.uniform(0.46, 0.53)),
        head_scale=float(rng.uniform(0.9, 1.1)),
    )


def _shade(colour: RGB, factor: float) -> tuple[int, int, int, int]:
    return tuple(int(min(255, c * factor)) for c in colour) + (255,)


def _opaque(colour: RGB) -> tuple[int, int, int, int]:
    return tuple(colour) + (255,)


class _Body:
    """Key points of a body of height `h` standing at (cx, top), for one view."""

    def __init__(self, ident: Identity, cx: float, top: float, h: float, view: str) -> None:
        side = view in ("left", "right")
        self.cx, self.top, self.h, self.view, self.side = cx, top, h, view, side
        self.facing = {"left": -1.0, "right": 1.0}.get(view, 0.0)
        self.head_ry = 0.062 * h * ident.head_scale
        self.head_rx = self.head_ry * (0.78 if not side else 0.85)
        self.head_cy = top + self.head_ry
        self.shoulder_y = top + 2 * self.head_ry + 0.025 * h
        self.hip_y = top + (1 - ident.leg_ratio) * h
        self.ankle_y = top + 0.965 * h
        self.shoulder_w = (0.068 if side else 0.118) * h * ident.build
        self.hip_w = (0.062 if side else 0.086) * h * ident.build
        self.leg_w = 0.046 * h * ident.build
        self.arm_w = max(2, int(0.034 * h * ident.build))


def draw_person(layer: Image.Image, ident: Identity, cx: float, top: float, height: float,
                view: str, phase: float) -> None:
    """Draw a pedestrian on an RGBA layer; the layer's alpha is the person's mask.

    `phase` (radians) is the walking cycle: it sets the stride (side views) or the
    spread of the feet (front and back) and the arm swing.
    """
    body = _Body(ident, cx, top, height, view)
    draw = ImageDraw.Draw(layer)
    _draw_side_backpack(draw, ident, body)
    _draw_legs(draw, ident, body, phase)
    _draw_torso(layer, draw, ident, body)
    _draw_arms(draw, ident, body, phase)
    _draw_bags(draw, ident, body, phase)
    _draw_head(draw, ident, body)


def _legs_geometry(body: _Body, phase: float) -> list[tuple[float, float, float]]:
    """(hip x, ankle x, shade) per leg, far leg first."""
    if body.side:
        stride = 0.11 * body.h * math.sin(phase)
        return [(body.cx, body.cx - stride, 0.8), (body.cx, body.cx + stride, 1.0)]
    spread = 0.02 * body.h * abs(math.sin(phase))
    inner = body.hip_w - body.leg_w / 2
    return [(body.cx + s * inner, body.cx + s * (inner * 0.8 + spread), 1.0) for s in (-1, 1)]


def _draw_legs(draw: ImageDraw.ImageDraw, ident: Identity, body: _Body, phase: float) -> None:
    kind = ident.labels["bottom_kind"]
    leg_len = body.ankle_y - body.hip_y
    cloth_end = {"trousers": 1.0, "shorts": 0.42, "skirt": 0.0}[kind]
    half = body.leg_w / 2
    for hip_x, ankle_x, shade in _legs_geometry(body, phase):
        def at(t: float) -> float:
            return hip_x + (ankle_x - hip_x) * t

        y0 = body.hip_y - 0.02 * body.h
        y_cloth = body.hip_y + cloth_end * leg_len
        skin_poly = [(at(0) - half, y0), (at(0) + half, y0), (at(1) + half * 0.75, body.ankle_y),
                     (at(1) - half * 0.75, body.ankle_y)]
        draw.polygon(skin_poly, fill=_shade(ident.skin, shade * 0.95))
        if cloth_end > 0:
            t = cloth_end
            draw.polygon([(at(0) - half * 1.05, y0), (at(0) + half * 1.05, y0),
                          (at(t) + half * (1 - 0.25 * t) * 1.05, y_cloth),
                          (at(t) - half * (1 - 0.25 * t) * 1.05, y_cloth)], fill=_shade(ident.bottom, shade))
        shoe_w = body.leg_w * (1.9 if body.side else 1.25)
        shoe_x = at(1) + body.facing * shoe_w * 0.25
        draw.ellipse([shoe_x - shoe_w / 2, body.ankle_y - 0.018 * body.h, shoe_x + shoe_w / 2,
                      body.ankle_y + 0.03 * body.h], fill=_shade(ident.shoes, shade))
    # the pelvis joins the legs; a skirt flares over them
    if kind == "skirt":
        flare = body.hip_w * 1.45
        draw.polygon([(body.cx - body.hip_w, body.hip_y - 0.03 * body.h), (body.cx + body.hip_w, body.hip_y - 0.03 * body.h),
                      (body.cx + flare, body.hip_y + 0.5 * leg_len), (body.cx - flare, body.hip_y + 0.5 * leg_len)],
                     fill=_opaque(ident.bottom))
    else:
        draw.rectangle([body.cx - body.hip_w, body.hip_y - 0.03 * body.h, body.cx + body.hip_w,
                        body.hip_y + 0.05 * body.h], fill=_opaque(ident.bottom))


def _torso_polygon(body: _Body) -> list[tuple[float, float]]:
    s, hw, y0, y1 = body.shoulder_w, body.hip_w, body.shoulder_y, body.hip_y + 0.03 * body.h
    lean = body.facing * 0.012 * body.h
    return [(body.cx - s * 0.8 + lean, y0 - 0.012 * body.h), (body.cx + s * 0.8 + lean, y0 - 0.012 * body.h),
            (body.cx + s + lean, y0 + 0.02 * body.h), (body.cx + hw, y1), (body.cx - hw, y1),
            (body.cx - s + lean, y0 + 0.02 * body.h)]


def _draw_torso(layer: Image.Image, draw: ImageDraw.ImageDraw, ident: Identity, body: _Body) -> None:
    polygon = _torso_polygon(body)
    draw.polygon(polygon, fill=_opaque(ident.top))
    pattern = ident.labels["top_pattern"]
    y0, y1 = body.shoulder_y - 0.012 * body.h, body.hip_y + 0.03 * body.h
    if pattern == "stripes" or pattern == "two_tone":
        mask = Image.new("L", layer.size, 0)
        ImageDraw.Draw(mask).polygon(polygon, fill=255)
        bands = Image.new("L", layer.size, 0)
        band_draw = ImageDraw.Draw(bands)
        if pattern == "stripes":
            step = 0.036 * body.h
            for y in np.arange(y0 + step / 2, y1, step):
                band_draw.rectangle([0, y, layer.size[0], y + step * 0.45], fill=255)
        else:
            band_draw.rectangle([0, y0, layer.size[0], y0 + 0.4 * (y1 - y0)], fill=255)
        layer.paste(_opaque(ident.top_second), (0, 0, *layer.size), ImageChops.multiply(mask, bands))
    if body.view == "front" and pattern == "open_jacket":
        w = body.shoulder_w * 0.34
        draw.polygon([(body.cx - w, y0 + 0.01 * body.h), (body.cx + w, y0 + 0.01 * body.h),
                      (body.cx + w * 0.8, y1), (body.cx - w * 0.8, y1)], fill=_opaque(ident.top_second))
    logo = ident.labels["logo"]
    if body.view == "front" and logo != "none":
        r, x, y = 0.028 * body.h, body.cx, body.shoulder_y + 0.1 * body.h
        colour = _opaque(ident.logo_colour)
        shapes = {
            "circle": lambda: draw.ellipse([x - r, y - r, x + r, y + r], fill=colour),
            "square": lambda: draw.rectangle([x - r, y - r, x + r, y + r], fill=colour),
            "triangle": lambda: draw.polygon([(x, y - r * 1.2), (x + r * 1.2, y + r), (x - r * 1.2, y + r)], fill=colour),
        }
        shapes[logo]()


def _draw_arms(draw: ImageDraw.ImageDraw, ident: Identity, body: _Body, phase: float) -> None:
    length = 0.36 * body.h
    sleeve = 1.0 if ident.labels["sleeves"] == "long" else 0.38
    if body.side:
        swing = 0.5 * math.sin(phase + math.pi)
        arms = [((body.cx + body.facing * 0.01 * body.h, body.shoulder_y + 0.01 * body.h), swing)]
    else:
        arms = [((body.cx + s * (body.shoulder_w - body.arm_w * 0.4), body.shoulder_y + 0.015 * body.h), s * 0.06)
                for s in (-1, 1)]
    for (x0, y0), angle in arms:
        x1, y1 = x0 + length * math.sin(angle), y0 + length * math.cos(angle)
        xm, ym = x0 + (x1 - x0) * sleeve, y0 + (y1 - y0) * sleeve
        draw.line([(x0, y0), (x1, y1)], fill=_opaque(ident.skin), width=int(body.arm_w * 0.85))
        draw.line([(x0, y0), (xm, ym)], fill=_shade(ident.top, 0.92), width=body.arm_w)
        r = body.arm_w * 0.55
        draw.ellipse([x1 - r, y1 - r, x1 + r, y1 + r], fill=_opaque(ident.skin))


def _hand_positions(body: _Body, phase: float) -> list[tuple[float, float]]:
    length = 0.36 * body.h
    if body.side:
        angle = 0.5 * math.sin(phase + math.pi)
        return [(body.cx + length * math.sin(angle), body.shoulder_y + length * math.cos(angle))]
    return [(body.cx + s * (body.shoulder_w + 0.02 * body.h), body.shoulder_y + length) for s in (-1, 1)]


def _draw_side_backpack(draw: ImageDraw.ImageDraw, ident: Identity, body: _Body) -> None:
    """Seen from the side a backpack sticks out behind the body, so it goes under the torso;
    from the back it covers the torso and from the front only its straps show (`_draw_bags`)."""
    if ident.labels["bag"] != "backpack" or not body.side:
        return
    back = -body.facing
    x_in = body.cx + back * body.shoulder_w * 0.6
    x_out = body.cx + back * (body.shoulder_w + 0.085 * body.h)
    draw.rounded_rectangle([min(x_in, x_out), body.shoulder_y + 0.015 * body.h, max(x_in, x_out),
                            body.hip_y - 0.015 * body.h], radius=0.02 * body.h, fill=_opaque(ident.bag_colour))


def _draw_bags(draw: ImageDraw.ImageDraw, ident: Identity, body: _Body, phase: float) -> None:
    bag, colour = ident.labels["bag"], _opaque(ident.bag_colour)
    strap_w = max(1, int(0.014 * body.h))
    y_top = body.shoulder_y - 0.005 * body.h
    if bag == "backpack" and body.view == "back":
        w = body.shoulder_w * 0.8
        draw.rounded_rectangle([body.cx - w, body.shoulder_y + 0.015 * body.h, body.cx + w, body.hip_y - 0.015 * body.h],
                               radius=0.025 * body.h, fill=colour)
        draw.line([(body.cx - w * 0.8, body.shoulder_y + 0.07 * body.h), (body.cx + w * 0.8, body.shoulder_y + 0.07 * body.h)],
                  fill=_shade(ident.bag_colour, 0.7), width=strap_w)
    elif bag == "backpack" and body.view == "front":
        for s in (-1, 1):
            x = body.cx + s * body.shoulder_w * 0.55
            draw.line([(x, y_top), (x - s * 0.01 * body.h, body.shoulder_y + 0.2 * body.h)], fill=colour, width=strap_w)
    elif bag == "shoulder_bag":
        s = {"front": 1, "back": -1, "left": 1, "right": -1}[body.view]
        x_bag = body.cx + s * (body.hip_w + 0.01 * body.h) if not body.side else body.cx
        draw.line([(body.cx - s * body.shoulder_w * 0.6, y_top), (x_bag, body.hip_y - 0.03 * body.h)],
                  fill=colour, width=strap_w)
        draw.rectangle([x_bag - 0.035 * body.h, body.hip_y - 0.05 * body.h, x_bag + 0.04 * body.h,
                        body.hip_y + 0.045 * body.h], fill=colour)
    elif bag == "handbag":
        x, y = _hand_positions(body, phase)[-1]
        draw.line([(x, y), (x, y + 0.02 * body.h)], fill=colour, width=strap_w)
        draw.rectangle([x - 0.032 * body.h, y + 0.02 * body.h, x + 0.032 * body.h, y + 0.085 * body.h], fill=colour)


def _draw_head(draw: ImageDraw.ImageDraw, ident: Identity, body: _Body) -> None:
    cx = body.cx + body.facing * 0.012 * body.h
    rx, ry, cy = body.head_rx, body.head_ry, body.head_cy
    style, hair, skin = ident.labels["hair_style"], _opaque(ident.hair), _opaque(ident.skin)
    neck_w = rx * 0.45
    draw.rectangle([body.cx - neck_w, cy + ry * 0.6, body.cx + neck_w, body.shoulder_y], fill=_shade(ident.skin, 0.9))
    if style == "long" and body.view != "front":
        back = -body.facing if body.side else 0
        draw.rectangle([cx - rx * 0.95 + back * rx * 0.3, cy, cx + rx * 0.95 + back * rx * 0.3,
                        body.shoulder_y + 0.09 * body.h], fill=hair)
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=skin)
    cover = {"cropped": 0.35, "short": 0.62, "long": 0.7}[style]
    if body.view == "back":
        draw.ellipse([cx - rx * 1.04, cy - ry * 1.04, cx + rx * 1.04, cy + ry * (0.5 + cover * 0.5)], fill=hair)
    elif body.side:
        # PIL angles run clockwise from 3 o'clock: the hair covers the top and the back of the head
        reach = 60 * (0.62 - cover)
        start, end = (120 + reach, 300) if body.facing > 0 else (240, 420 - reach)
        draw.chord([cx - rx * 1.04, cy - ry * 1.06, cx + rx * 1.04, cy + ry * 1.0], start=start, end=end, fill=hair)
    else:
        draw.chord([cx - rx * 1.04, cy - ry * 1.06, cx + rx * 1.04, cy + ry * (2 * cover - 0.3)],
                   start=180, end=360, fill=hair)
        if style == "long":
            for s in (-1, 1):
                draw.rectangle([cx + s * rx * 0.75 - rx * 0.25, cy - ry * 0.2, cx + s * rx * 0.75 + rx * 0.25,
                                body.shoulder_y + 0.06 * body.h], fill=hair)
    hat, colour = ident.labels["hat"], _opaque(ident.hat_colour)
    if hat == "beanie":
        draw.chord([cx - rx * 1.08, cy - ry * 1.12, cx + rx * 1.08, cy + ry * 0.3], start=180, end=360, fill=colour)
    elif hat == "cap":
        draw.chord([cx - rx * 1.05, cy - ry * 1.1, cx + rx * 1.05, cy + ry * 0.1], start=180, end=360, fill=colour)
        brim = {"front": (cx - rx * 0.9, cx + rx * 0.9), "back": (cx - rx * 0.6, cx + rx * 0.6),
                "left": (cx - rx * 1.6, cx), "right": (cx, cx + rx * 1.6)}[body.view]
        draw.rectangle([brim[0], cy - ry * 0.5, brim[1], cy - ry * 0.32], fill=_shade(ident.hat_colour, 0.8))
