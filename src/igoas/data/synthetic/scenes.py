"""Cameras: each has its own place (background scene), light, colour cast, optics and
sensor, and a preferred walking direction, so the same person looks different from one
camera to the next, as in the real multi-camera datasets."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Camera:
    """What a camera does to every image it takes."""

    scene: str
    wall: RGB
    ground: RGB
    accent: RGB
    horizon: float  # row (fraction of the height) where the ground starts
    gain: float  # illumination
    cast: tuple[float, float, float]  # per-channel colour gain (white balance)
    blur: float  # Gaussian sigma in output pixels (optics, focus)
    noise: float  # sensor noise, standard deviation in grey levels
    resolution: float  # fraction of the output resolution the camera really resolves
    view_weights: tuple[float, float, float, float]  # front, back, left, right


def _colour(rng: np.random.Generator, low: int, high: int, tint: tuple[float, float, float] = (1, 1, 1)) -> RGB:
    base = rng.uniform(low, high)
    return tuple(int(np.clip(base * t + rng.normal(0, 8), 0, 255)) for t in tint)


def _street(draw: ImageDraw.ImageDraw, cam: Camera, w: int, h: int, horizon: int, rng: np.random.Generator) -> None:
    step_x, step_y = int(rng.integers(26, 40)), int(rng.integers(30, 44))
    off_x, off_y = int(rng.integers(0, step_x)), int(rng.integers(0, step_y))
    for x in range(-off_x, w, step_x):
        for y in range(-off_y, horizon - 10, step_y):
            draw.rectangle([x + 5, y + 6, x + step_x - 7, y + step_y - 10], fill=cam.accent)
    for y in range(horizon + 6, h, 14):
        draw.line([(0, y), (w, y)], fill=tuple(int(c * 0.88) for c in cam.ground), width=1)


def _plaza(draw: ImageDraw.ImageDraw, cam: Camera, w: int, h: int, horizon: int, rng: np.random.Generator) -> None:
    off = int(rng.integers(0, 30))
    for x in range(-off, w, 30):
        draw.line([(x, 0), (x, horizon)], fill=cam.accent, width=3)
    tile = int(rng.integers(18, 28))
    for y in range(horizon, h, tile):
        draw.line([(0, y), (w, y)], fill=tuple(int(c * 0.8) for c in cam.ground), width=1)
    for x in range(-off, w, tile):
        draw.line([(x, horizon), (x + (x - w / 2) * 0.5, h)], fill=tuple(int(c * 0.8) for c in cam.ground), width=1)


def _park(draw: ImageDraw.ImageDraw, cam: Camera, w: int, h: int, horizon: int, rng: np.random.Generator) -> None:
    for _ in range(7):
        x, y, r = rng.uniform(-10, w + 10), rng.uniform(0, horizon), rng.uniform(14, 34)
        shade = rng.uniform(0.7, 1.2)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(min(255, c * shade)) for c in cam.accent))
    path_left = rng.uniform(0.1, 0.4) * w
    draw.polygon([(path_left, horizon), (path_left + 0.4 * w, horizon), (w * 1.1, h), (-0.1 * w, h)],
                 fill=tuple(int(c * 1.25) for c in cam.ground[::-1]))


def _corridor(draw: ImageDraw.ImageDraw, cam: Camera, w: int, h: int, horizon: int, rng: np.random.Generator) -> None:
    x = rng.uniform(-40, 20)
    while x < w:
        door_w = rng.uniform(24, 36)
        draw.rectangle([x, horizon * 0.25, x + door_w, horizon], fill=cam.accent)
        x += door_w + rng.uniform(30, 60)
    draw.rectangle([0, horizon - 3, w, horizon + 2], fill=tuple(int(c * 0.6) for c in cam.wall))


def _parking(draw: ImageDraw.ImageDraw, cam: Camera, w: int, h: int, horizon: int, rng: np.random.Generator) -> None:
    for _ in range(3):
        x, width = rng.uniform(-40, w), rng.uniform(40, 70)
        top = horizon - rng.uniform(14, 24)
        colour = tuple(int(c) for c in rng.integers(40, 200, 3))
        draw.rounded_rectangle([x, top, x + width, horizon + 4], radius=6, fill=colour)
    for x in np.arange(rng.uniform(-20, 0), w, 42):
        draw.line([(x, horizon + 4), (x - 30, h)], fill=(210, 210, 200), width=2)


def _campus(draw: ImageDraw.ImageDraw, cam: Camera, w: int, h: int, horizon: int, rng: np.random.Generator) -> None:
    brick_w, brick_h = 16, 8
    mortar = tuple(int(min(255, c * 1.3)) for c in cam.wall)
    offset = int(rng.integers(0, brick_w))
    for row, y in enumerate(range(0, horizon, brick_h)):
        draw.line([(0, y), (w, y)], fill=mortar, width=1)
        for x in range((row % 2) * brick_w // 2 - offset, w, brick_w):
            draw.line([(x, y), (x, y + brick_h)], fill=mortar, width=1)


SCENES = {"street": _street, "plaza": _plaza, "park": _park, "corridor": _corridor,
          "parking": _parking, "campus": _campus}
# scene -> (wall brightness range, ground brightness range, wall tint, ground tint, accent tint)
SCENE_COLOURS = {
    "street": ((120, 190), (110, 160), (1.0, 0.95, 0.88), (1, 1, 1), (0.55, 0.6, 0.7)),
    "plaza": ((140, 200), (150, 200), (0.8, 0.9, 1.0), (1.0, 0.97, 0.92), (0.45, 0.48, 0.52)),
    "park": ((90, 150), (80, 120), (0.7, 0.85, 1.0), (0.55, 0.9, 0.45), (0.35, 0.6, 0.3)),
    "corridor": ((170, 220), (120, 170), (1.0, 0.95, 0.85), (0.9, 0.9, 0.92), (0.6, 0.45, 0.35)),
    "parking": ((110, 170), (60, 100), (0.95, 0.95, 1.0), (1, 1, 1), (1, 1, 1)),
    "campus": ((110, 150), (120, 170), (1.0, 0.55, 0.42), (1.0, 0.96, 0.9), (1, 1, 1)),
}


def make_cameras(rng: np.random.Generator, count: int) -> list[Camera]:
    """`count` cameras with distinct scenes (cycled when there are more cameras than scenes)."""
    scenes = [list(SCENES)[i] for i in rng.permutation(len(SCENES))]
    cameras = []
    for index in range(count):
        scene = scenes[index % len(scenes)]
        wall_range, ground_range, wall_tint, ground_tint, accent_tint = SCENE_COLOURS[scene]
        front_back = rng.uniform(0.2, 0.8)  # how much people walk towards/away from this camera
        toward = rng.uniform(0.2, 0.8)
        cameras.append(Camera(
            scene=scene,
            wall=_colour(rng, *wall_range, wall_tint),
            ground=_colour(rng, *ground_range, ground_tint),
            accent=_colour(rng, 60, 140, accent_tint),
            horizon=float(rng.uniform(0.5, 0.68)),
            gain=float(rng.uniform(0.7, 1.2)),
            cast=tuple(float(g) for g in rng.uniform(0.86, 1.14, 3)),
            blur=float(rng.uniform(0.0, 0.9)),
            noise=float(rng.uniform(2.0, 9.0)),
            resolution=float(rng.uniform(0.5, 1.0)),
            view_weights=(front_back * toward, front_back * (1 - toward), (1 - front_back) / 2, (1 - front_back) / 2),
        ))
    return cameras


def draw_background(camera: Camera, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """This camera's scene, with the small changes of a different moment and position."""
    horizon = int(height * (camera.horizon + rng.uniform(-0.03, 0.03)))
    image = Image.new("RGB", (width, height), camera.wall)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, horizon, width, height], fill=camera.ground)
    SCENES[camera.scene](draw, camera, width, height, horizon, rng)
    for _ in range(int(rng.integers(0, 3))):  # clutter: bins, signs, far objects
        x, y = rng.uniform(0, width), rng.uniform(horizon * 0.6, horizon * 1.05)
        bw, bh = rng.uniform(8, 24), rng.uniform(10, 40)
        colour = tuple(int(c) for c in rng.integers(30, 220, 3))
        draw.rectangle([x, y - bh, x + bw, y], fill=colour)
    return image


def apply_camera(image: Image.Image, camera: Camera, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Render the scene through the camera: resolution loss, blur, light, white balance
    and sensor noise; returns an RGB image of `size` (width, height)."""
    width, height = size
    low = (max(8, round(width * camera.resolution)), max(16, round(height * camera.resolution)))
    image = image.resize(low, Image.BILINEAR, reducing_gap=2.0).resize(size, Image.BILINEAR)
    sigma = camera.blur + rng.uniform(0.0, 0.3)
    if sigma > 0.15:
        image = image.filter(ImageFilter.GaussianBlur(sigma))
    pixels = np.asarray(image, dtype=np.float32)
    light = camera.gain * rng.uniform(0.9, 1.1)
    pixels = pixels * (np.asarray(camera.cast, dtype=np.float32) * light)
    pixels += rng.normal(0.0, camera.noise, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")
