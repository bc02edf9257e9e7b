"""`ReIDModel.embed_crops`: a tracker's frame and boxes in, one unit row per box out, through `embed`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from factories import tiny_checkpoint

from igoas.deploy.inference import ReIDModel
from igoas.runtime.crops import clip_boxes
from igoas.utils.errors import IgoasError


@pytest.fixture(scope="module")
def reid(tmp_path_factory: pytest.TempPathFactory) -> ReIDModel:
    path = tiny_checkpoint(tmp_path_factory.mktemp("crops") / "tiny.pth")
    return ReIDModel.from_checkpoint(path, device="cpu", precision="fp32", channels_last=False)


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a.astype(np.float64) * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_a_crop_equals_the_same_crop_through_embed(reid: ReIDModel, frame: np.ndarray) -> None:
    boxes = [[10, 5, 50, 100], [60.4, 20.2, 90.6, 70.0]]
    rows = reid.embed_crops(frame, boxes)
    direct = reid.embed([frame[5:100, 10:50], frame[20:70, 60:91]])
    assert rows.shape == (2, 512) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-6)
    assert np.abs(_cosines(rows, direct) - 1.0).max() <= 1e-6


def test_bgr_frames_and_boxes_outside_the_frame(reid: ReIDModel, frame: np.ndarray) -> None:
    rgb = reid.embed_crops(frame, [[0, 0, 40, 90], [120, 60, 160, 120]])
    bgr = reid.embed_crops(np.ascontiguousarray(frame[:, :, ::-1]), [[-20, -5, 40, 90], [120, 60, 400, 300]], bgr=True)
    np.testing.assert_allclose(bgr, rgb, atol=1e-6)


def test_no_box_and_batches_larger_than_the_maximum(reid: ReIDModel, frame: np.ndarray) -> None:
    assert reid.embed_crops(frame, np.zeros((0, 4))).shape == (0, 512)
    assert reid.embed_crops(frame, []).shape == (0, 512)
    boxes = [[x, 10, x + 30, 100] for x in range(0, 110, 10)]
    np.testing.assert_allclose(reid.embed_crops(frame, boxes, max_batch=3), reid.embed_crops(frame, boxes), atol=1e-6)
    with pytest.raises(IgoasError, match="max_batch"):
        reid.embed_crops(frame, boxes, max_batch=0)


@pytest.mark.parametrize(("boxes", "message"), [
    ([[0, 0, 10, 10], [5, 5, 5, 20]], "box 1 .* zero or negative width"),
    ([[0, 0, 10, 10], [0, 0, 10, 10], [30, 40, 20, 60]], "box 2 .* zero or negative width"),
    ([[200, 10, 260, 50]], "box 0 .* lies outside"),
    ([[0, 0, float("nan"), 10]], "box 0 .*NaN"),
    ([[0, 0, 10]], "N x 4"),
])
def test_degenerate_boxes_are_refused_by_index(reid: ReIDModel, frame: np.ndarray, boxes, message: str) -> None:
    with pytest.raises(IgoasError, match=message):
        reid.embed_crops(frame, boxes)


@pytest.mark.parametrize(("bad", "message"), [
    (np.zeros((20, 10), np.uint8), "H x W x 3"),
    (np.zeros((20, 10, 4), np.uint8), "H x W x 3"),
    (np.zeros((20, 10, 3), np.float32), "uint8"),
    ([[0, 0, 0]], "numpy array"),
])
def test_a_frame_that_is_no_uint8_image_is_refused(reid: ReIDModel, bad, message: str) -> None:
    with pytest.raises(IgoasError, match=message):
        reid.embed_crops(bad, [[0, 0, 5, 5]])


def test_boxes_cover_every_touched_pixel() -> None:
    assert clip_boxes([[10.2, 5.5, 20.7, 30.0], [-3, -3, 500, 500]], 100, 50).tolist() == [[10, 5, 21, 30],
                                                                                          [0, 0, 50, 100]]


@pytest.mark.slow  # a fresh interpreter imports torch: about 7 s
def test_the_crop_path_needs_no_training_stack() -> None:
    code = "import sys, igoas.deploy.inference; print(sorted(m for m in sys.modules if m.startswith('igoas.training')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).parent).stdout.strip() == "[]"
