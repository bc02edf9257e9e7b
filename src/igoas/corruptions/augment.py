"""Corruptions as a training augmentation: with probability p an image gets a random
corruption at a random severity, both drawn uniformly as in the benchmark's random
setting, so a model can be trained to meet them (and the benchmark then measures it).
An image with a side under 32 pixels, which the corruptions cannot take, is left unchanged
(the benchmark refuses such images up front; a training set may hold a few).

Randomness comes from torch's generator, which the training loader seeds per worker, so
a deterministic run stays deterministic.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from igoas.corruptions.apply import CORRUPTIONS, MIN_SIDE, SEVERITIES, check_corruptions, corrupt
from igoas.corruptions.library import imagecorruptions
from igoas.utils.errors import ConfigError


class RandomCorruption(torch.nn.Module):
    """A 3 x H x W uint8 image (before the resize) corrupted with probability `p`; images
    with a side under 32 pixels pass unchanged."""

    def __init__(self, p: float, corruptions: Sequence[str] = CORRUPTIONS,
                 severities: Sequence[int] = SEVERITIES) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"corruption augmentation probability must be in [0, 1], got {p}")
        check_corruptions(corruptions, severities)
        if p > 0:
            imagecorruptions()  # fail when the transforms are built, not inside a loader worker
        self.p, self.corruptions, self.severities = p, tuple(corruptions), tuple(int(s) for s in severities)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.p == 0 or float(torch.rand(())) >= self.p or min(image.shape[-2:]) < MIN_SIDE:
            return image
        name = self.corruptions[int(torch.randint(len(self.corruptions), ()))]
        severity = self.severities[int(torch.randint(len(self.severities), ()))]
        seed = int(torch.randint(2**62, ()))
        pixels = image.as_subclass(torch.Tensor).permute(1, 2, 0).numpy()
        corrupted = torch.from_numpy(corrupt(np.ascontiguousarray(pixels), name, severity, seed)).permute(2, 0, 1)
        return type(image)(corrupted) if type(image) is not torch.Tensor else corrupted.contiguous()

    def extra_repr(self) -> str:
        return f"p={self.p}, corruptions={len(self.corruptions)}, severities={list(self.severities)}"
