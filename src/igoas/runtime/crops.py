"""Detections to person crops: frame and box checks, clipping, cutting, batching (numpy only).

A tracker hands over a whole video frame and its detector's boxes; both the PyTorch path
(`ReIDModel.embed_crops`) and the torch-free runtime (`igoas.runtime.CropEmbedder`) cut the
crops here, so a box is clipped and rounded to the same pixels whichever path embeds it.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import numpy.typing as npt

from igoas.utils.errors import IgoasError

DEFAULT_MAX_BATCH = 64


def check_frame(frame: npt.ArrayLike) -> np.ndarray:
    """The frame as an H x W x 3 uint8 array, or an IgoasError that says what it is instead."""
    if not isinstance(frame, np.ndarray):
        raise IgoasError(f"frame: expected an H x W x 3 uint8 numpy array (an RGB image, or BGR with bgr=True), "
                         f"got {type(frame).__name__}; convert it with np.asarray(frame)")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise IgoasError(f"frame: expected shape H x W x 3 (three colour channels last), got {frame.shape}; "
                         "convert grey or RGBA frames to 3 channels first")
    if frame.dtype != np.uint8:
        raise IgoasError(f"frame: expected dtype uint8 (0-255 pixels, as decoders and OpenCV give), got "
                         f"{frame.dtype}; convert it with (frame * 255).round().astype(np.uint8) for floats in [0, 1]")
    return frame


def clip_boxes(boxes: npt.ArrayLike, height: int, width: int) -> np.ndarray:
    """xyxy pixel boxes (N x 4, float or int) clipped to a height x width frame, as N x 4 int
    pixel bounds [x0, y0, x1) x [y0, y1) that cover every pixel the clipped box touches.

    Raises IgoasError naming the first box that is not finite or has no area inside the
    frame (zero or negative width or height after clipping): a crop of zero pixels has no
    embedding, and silently dropping it would misalign rows and detections.
    """
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise IgoasError(f"boxes: expected N x 4 numbers (x1, y1, x2, y2 in pixels), got {type(boxes).__name__} "
                         f"({err})") from None
    if array.size == 0:
        return np.zeros((0, 4), dtype=np.int64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise IgoasError(f"boxes: expected shape N x 4 (x1, y1, x2, y2 in pixels), got {array.shape}; "
                         "a single box is [[x1, y1, x2, y2]]")
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        index = int(np.flatnonzero(~finite)[0])
        raise IgoasError(f"box {index} {array[index].tolist()}: not a finite number (NaN or Inf); drop the "
                         "detection before embedding")
    clipped = np.clip(array, 0.0, [width, height, width, height])
    empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    if empty.any():
        index = int(np.flatnonzero(empty)[0])
        x1, y1, x2, y2 = array[index].tolist()
        where = ("lies outside" if x2 > x1 and y2 > y1 else "has zero or negative width or height in")
        raise IgoasError(f"box {index} [{x1:g}, {y1:g}, {x2:g}, {y2:g}] {where} the {width} x {height} (width x "
                         "height) frame, so no pixel is left after clipping; boxes are x1, y1, x2, y2 pixels "
                         "with x2 > x1 and y2 > y1")
    return np.concatenate([np.floor(clipped[:, :2]), np.ceil(clipped[:, 2:])], axis=1).astype(np.int64)


def cut_crops(frame: npt.ArrayLike, boxes: npt.ArrayLike, bgr: bool = False) -> list[np.ndarray]:
    """The RGB H x W x 3 uint8 crop of each box (views into the frame where it is RGB already)."""
    frame = check_frame(frame)
    bounds = clip_boxes(boxes, frame.shape[0], frame.shape[1])
    pixels = frame[:, :, ::-1] if bgr else frame
    return [pixels[y0:y1, x0:x1] for x0, y0, x1, y1 in bounds.tolist()]


def check_max_batch(max_batch: int) -> int:
    """`max_batch` as a positive int, or an IgoasError naming it."""
    if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
        raise IgoasError(f"max_batch={max_batch!r}: the most crops run at once must be a whole number, 1 or more "
                         f"(default {DEFAULT_MAX_BATCH})")
    return int(max_batch)


def batches(items: Sequence[Any], max_batch: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most `max_batch` items, in order."""
    for start in range(0, len(items), max_batch):
        yield items[start:start + max_batch]
