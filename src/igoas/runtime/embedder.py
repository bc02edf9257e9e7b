"""`CropEmbedder`: an exported igoas model embedding a tracker's detections, with numpy only.

The export's metadata says everything the crops need (input size, interpolation, the
embedding size); the mean/std normalisation and the final L2 normalisation are inside the
exported graph, so this side only cuts, resizes to [0, 1] RGB and batches.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from igoas.runtime.backends import load_graph
from igoas.runtime.crops import DEFAULT_MAX_BATCH, batches, check_max_batch, cut_crops
from igoas.runtime.resize import resize_batch, resize_filter
from igoas.utils.errors import IgoasError


class CropEmbedder:
    """An exported model (.onnx on onnxruntime, .xml on OpenVINO) that embeds crops of frames."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        graph = load_graph(path, threads)
        self.path = str(path)
        self.metadata: dict[str, Any] = graph.metadata
        preprocess = self.metadata.get("preprocess")
        if not isinstance(preprocess, dict) or "embedding_size" not in self.metadata:
            raise IgoasError(f"{path}: no igoas metadata with the input recipe and embedding size (written by "
                             "`igoas export` of this version); re-export the checkpoint with `igoas export CKPT`")
        self.height, self.width = int(preprocess["height"]), int(preprocess["width"])
        self.embedding_size = int(self.metadata["embedding_size"])
        self._resample = resize_filter(str(preprocess.get("interpolation", "bilinear")))
        self._run = graph.run

    def embed(self, frame: np.ndarray, boxes: npt.ArrayLike, bgr: bool = False,
              max_batch: int = DEFAULT_MAX_BATCH) -> np.ndarray:
        """N x D float32 unit-length embeddings of the N xyxy pixel `boxes` of an H x W x 3 uint8 frame.

        Boxes are clipped to the frame (an IgoasError names a box with no pixel left, or not
        finite); `bgr=True` for OpenCV frames; at most `max_batch` crops run at once.
        """
        return self.embed_images(cut_crops(frame, boxes, bgr), max_batch)

    def embed_images(self, crops: Sequence[np.ndarray], max_batch: int = DEFAULT_MAX_BATCH) -> np.ndarray:
        """N x D embeddings of RGB H x W x 3 uint8 person images (crops already cut), batched."""
        max_batch = check_max_batch(max_batch)
        rows = [self._run(resize_batch(chunk, self.height, self.width, self._resample))
                for chunk in batches(crops, max_batch)]
        return np.concatenate(rows).astype(np.float32, copy=False) if rows else \
            np.zeros((0, self.embedding_size), dtype=np.float32)

    def __repr__(self) -> str:
        return (f"CropEmbedder({self.path}, input {self.height}x{self.width}, {self.embedding_size}-d, "
                f"{self.metadata.get('method', '?')}/{self.metadata.get('backbone', '?')})")


def load(path: str | os.PathLike, threads: int | None = None) -> CropEmbedder:
    """An exported model ready to embed detections: `igoas.runtime.load("best.onnx").embed(frame, boxes)`."""
    return CropEmbedder(path, threads)
