"""`ReIDModel`: a trained network plus the preprocessing it was evaluated with, for users.

Loading goes through the checkpoint's own `preprocess` entry, so the input size and
mean/std can never be got wrong; `embed` accepts file paths, PIL images, numpy arrays or
tensors, batches them internally and returns unit-length float32 embeddings, so inner
product equals cosine similarity (what the FAISS gallery index relies on).
"""
from __future__ import annotations

import os
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import numpy.typing as npt
import torch

from igoas.artifacts.checkpoint import load_model_state, model_from_checkpoint, read_torch_file
from igoas.compute import speed
from igoas.compute.runtime import Runtime
from igoas.config import config_from_dict, load_config, model_arguments
from igoas.deploy.backends import openvino_module, resolve_backend
from igoas.evaluation.embedding import embed
from igoas.imaging.images import ImageInput, split_images
from igoas.imaging.preprocess import Preprocess
from igoas.model import build_model
from igoas.retrieval.features_file import Features
from igoas.runtime.crops import DEFAULT_MAX_BATCH, check_max_batch, cut_crops
from igoas.utils.errors import CheckpointError


class ReIDModel:
    """An eval-mode network with its preprocessing, device and precision settled once.

    The network given to the constructor is put in eval mode and moved/converted in place
    (like `module.to`); pass a copy to keep the original as it was. `backend` is
    "pytorch" (default), "openvino" (the network compiled by OpenVINO for the CPU, at
    `precision` fp32 or bf16) or "auto" (OpenVINO where it was measured to pay, see
    `igoas.deploy.backends`).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        preprocess: Preprocess,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        channels_last: bool | str = "auto",
        source: str | None = None,
        backend: str = "pytorch",
    ) -> None:

        self.runtime = Runtime.resolve(device, precision, channels_last)
        device, precision = self.runtime.device, self.runtime.precision
        self.backend = resolve_backend(backend, device)
        self.preprocess_config = preprocess
        self.source = source
        self.network = speed.to_memory_format(network.eval().to(device), self.runtime.channels_last)
        # what `embed` runs: the network, or its OpenVINO compilation (of the weights as they are now;
        # `network` stays for activation maps and export)
        self._embedder = (openvino_module(self.network, preprocess.height, preprocess.width, precision)
                          if self.backend == "openvino" else self.network)
        self._embedding_dim: int | None = None

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def precision(self) -> str:
        return self.runtime.precision

    @property
    def channels_last(self) -> bool:
        return self.runtime.channels_last

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike | Mapping[str, Any],
        device: str | torch.device = "auto",
        precision: str = "fp32",
        channels_last: bool | str = "auto",
        backend: str = "pytorch",
    ) -> "ReIDModel":
        """Rebuild the network a checkpoint (path or loaded payload) describes, with its preprocessing."""

        source = "checkpoint" if isinstance(path, Mapping) else str(path)
        network, payload = model_from_checkpoint(path)
        preprocess = Preprocess.resolve(payload, source)
        return cls(network, preprocess, device=device, precision=precision, channels_last=channels_last, source=source,
                   backend=backend)

    @classmethod
    def from_config(
        cls,
        config: str | os.PathLike | Mapping[str, Any],
        weights: str | os.PathLike,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        channels_last: bool | str = "auto",
        backend: str = "pytorch",
    ) -> "ReIDModel":
        """A run config (YAML path, preset name, loaded config or plain dict) plus a weights file.

        For weights kept apart from their checkpoint (a bare `state_dict()`, or a dict with
        `state_dict`/`model`): the config supplies the architecture and the preprocessing,
        the classifier size comes from the weights themselves.
        """
        from omegaconf import DictConfig

        cfg = config if isinstance(config, DictConfig) else (
            config_from_dict(dict(config), "config") if isinstance(config, Mapping) else load_config(config))
        state = read_torch_file(weights)
        if isinstance(state, dict):
            state = state.get("model", state.get("state_dict", state))
        classifier = state.get("global_classifier.weight") if isinstance(state, dict) else None
        if classifier is None:
            raise CheckpointError(
                f"{weights}: no model weights found (expected a state dict with 'global_classifier.weight'); "
                "a checkpoint trained with the authors' code is converted with `igoas import-official`"
            )
        network = build_model(num_classes=int(classifier.shape[0]), pretrained=False, **model_arguments(cfg.model))
        load_model_state(network, state, str(weights))
        return cls(network, Preprocess.from_config(cfg), device=device, precision=precision, channels_last=channels_last,
                   source=str(weights), backend=backend)

    @property
    def spec(self) -> dict[str, Any]:
        """The `build_model` arguments of the wrapped network."""
        return dict(getattr(self.network, "spec", {}) or {})

    @property
    def embedding_dim(self) -> int:
        """Length of one embedding (1024 for IGOAS, 512 for the baseline), found by one tiny forward."""
        if self._embedding_dim is None:
            probe = torch.zeros(3, self.preprocess_config.height, self.preprocess_config.width)
            self._embedding_dim = int(self.embed(probe).shape[1])
        return self._embedding_dim

    def preprocess(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        """The normalised B x 3 x H x W float32 batch the network sees for `images` (on the CPU)."""
        return self.preprocess_config(images)

    def embed(
        self,
        images: ImageInput | Sequence[ImageInput],
        batch_size: int = 64,
        output: Literal["numpy", "torch"] = "numpy",
    ) -> np.ndarray | torch.Tensor:
        """Unit-length float32 embeddings, one row per image, in input order.

        `images` is one image or a list/batch of them: file paths, PIL images, H x W x 3
        uint8 arrays, or 3 x H x W / B x 3 x H x W tensors (uint8, or float in [0, 1]).
        Images are loaded and preprocessed `batch_size` at a time, so a long list of paths
        never sits in memory as pixels.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if output not in ("numpy", "torch"):
            raise ValueError(f"output must be 'numpy' or 'torch', got {output!r}")
        rows = embed(self._embedder, split_images(images), self.preprocess_config, self.runtime,
                     batch_size=batch_size).embeddings
        return rows if output == "numpy" else torch.from_numpy(rows)

    def embed_crops(
        self,
        frame: np.ndarray,
        boxes: npt.ArrayLike,
        *,
        bgr: bool = False,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> np.ndarray:
        """N x D unit-length float32 embeddings of the N detections `boxes` (xyxy pixels) in one frame.

        For a tracker's update loop: the H x W x 3 uint8 frame (RGB, or BGR with `bgr=True`
        as OpenCV decodes) is cut into crops by `igoas.runtime.crops` (boxes clipped to the
        frame; a box with no pixel left raises IgoasError naming it), and the crops go
        through `embed`, so each row equals `embed` of the same crop. At most `max_batch`
        crops run at once; no box gives a 0 x D array.
        """
        crops = cut_crops(frame, boxes, bgr)
        max_batch = check_max_batch(max_batch)
        if not crops:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return self.embed(crops, batch_size=max_batch)

    def embed_files(
        self,
        paths: Sequence[str | os.PathLike],
        batch_size: int = 64,
        num_workers: int = 0,
        progress: bool = False,
    ) -> Features:
        """Embed image files, skipping (and reporting) the ones that cannot be read.

        Unlike `embed`, a missing, corrupt or non-image file is not fatal here: it is left
        out and listed in `bad_paths`, with the reason in `bad` (path -> reason), so one
        bad file never loses a long extraction. `num_workers` > 0 decodes images in
        background processes while the network runs.
        """
        return embed(self._embedder, [str(p) for p in paths], self.preprocess_config, self.runtime,
                     batch_size=batch_size, num_workers=num_workers, on_error="skip", progress=progress)

    def __repr__(self) -> str:
        size = f"{self.preprocess_config.height}x{self.preprocess_config.width}"
        return (
            f"ReIDModel({self.spec.get('name', type(self.network).__name__)}, input {size}, device={self.device}, "
            f"precision={self.precision}, channels_last={self.channels_last}, backend={self.backend})"
        )
