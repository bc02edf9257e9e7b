"""Pictures for the page: images and activation-map overlays as inline PNG data URIs.

Inline images keep each result page self-contained (no second request that could hit a
file the server should not hand out) and small: panels are drawn at the network's input
size, a few kB each. Query thumbnails for the picker are the one exception: there may be
thousands, so the page loads them lazily from a route that serves them by list position.
"""
from __future__ import annotations

import base64
import io

import numpy as np
import torch

from igoas.imaging.images import load_image, resize_image, to_unit_float
from igoas.imaging.preprocess import INTERPOLATION
from igoas.viz._figure import heat_overlay


def png_bytes(pixels: np.ndarray) -> bytes:
    """An H x W x 3 float image in [0, 1] as PNG file bytes."""
    from PIL import Image

    array = (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def png_data_uri(pixels: np.ndarray) -> str:
    """An H x W x 3 float image in [0, 1] as a `data:image/png;base64,...` URI."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")


def thumbnail_png(path: str, height: int) -> bytes:
    """An image file `height` pixels high (its aspect kept) as PNG bytes; IgoasError naming the file if unreadable."""

    image = load_image(path)
    width = max(1, round(image.shape[-1] * height / image.shape[-2]))
    return png_bytes(to_unit_float(resize_image(image, height, width, INTERPOLATION)).permute(1, 2, 0).numpy())


def image_uri(pixels: torch.Tensor) -> str:
    """A 3 x H x W float tensor in [0, 1] as a PNG data URI."""
    return png_data_uri(pixels.permute(1, 2, 0).float().numpy())


def overlay_uris(pixels: torch.Tensor, maps: dict[str, torch.Tensor], alpha: float = 0.5) -> dict[str, str]:
    """Per branch, one image's activation map (h x w in [0, 1]) blended over it, as PNG data URIs."""
    image = pixels.permute(1, 2, 0).float().numpy()
    return {branch: png_data_uri(heat_overlay(image, values, alpha)) for branch, values in maps.items()}
