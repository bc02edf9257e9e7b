"""The torch-free runtime: an exported igoas model (ONNX or OpenVINO IR) embedding a tracker's
detections with numpy, PIL and onnxruntime (or OpenVINO) alone.

    from igoas.runtime import load
    embedder = load("best.onnx")
    vectors = embedder.embed(frame, boxes, bgr=True)   # N x D float32, unit length

Imports nothing of igoas beyond `igoas.utils` modules that need no torch, so a tracker's
process never loads PyTorch (tests/runtime checks it with torch made unimportable).
"""
from igoas.runtime.crops import DEFAULT_MAX_BATCH, clip_boxes, cut_crops
from igoas.runtime.embedder import CropEmbedder, load

__all__ = ["DEFAULT_MAX_BATCH", "CropEmbedder", "clip_boxes", "cut_crops", "load"]
