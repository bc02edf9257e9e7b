"""The baseline (global branch only) on a timm trunk: trunk -> global feature -> 512-d
reduction -> identity classifier, with the IGOAS baseline's heads, outputs and occlusion
hooks, so the trainer, the losses and evaluation take it as they take `IGOAS`.

IGOAS itself needs ResNet stages (a shared stage 1-3 and two stage-4 copies); this
network needs only a pooled feature, which every timm trunk gives.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igoas.model.heads import classifier, reduction
from igoas.model.network import IGOASOutput
from igoas.model.occlusion import Occlusion, build_occlusion
from igoas.model.osm import MASK_RESIZE, resize_mask
from igoas.model.timm_backbones import DEFAULT_INPUT_SIZE, TimmTrunk
from igoas.utils.errors import ConfigError

FIXBASE_MODULES = ("global_reduction", "global_classifier")


class TimmBaseline(nn.Module):
    """Baseline on a timm backbone. Options: `input_size` (ViT and Swin are built for it),
    `patch_stride` (ViT only: 12 for TransReID's overlapping patches), `global_pooling`,
    `reduction_dim`, `occlusion`/`occlusion_options` (a ViT takes image-level methods only:
    it has no feature map to drop a band on), `mask_resize`."""

    def __init__(self, num_classes: int, backbone: str, pretrained: bool | str | Path = False,
                 input_size: tuple[int, int] | list[int] = DEFAULT_INPUT_SIZE, patch_stride: int | None = None,
                 global_pooling: str = "avg", reduction_dim: int = 512, occlusion: str = "none",
                 occlusion_options: dict[str, Any] | None = None, mask_resize: str = "bilinear") -> None:
        super().__init__()
        if mask_resize not in MASK_RESIZE:
            raise ConfigError(f"unknown mask_resize {mask_resize!r}; choose one of {sorted(MASK_RESIZE)}")
        self.trunk = TimmTrunk(backbone, pretrained, tuple(input_size), patch_stride, global_pooling)
        self.occlusion: Occlusion = build_occlusion(occlusion, **(occlusion_options or {}))
        if self.occlusion.level != "input" and not self.trunk.has_map:
            raise ConfigError(f"occlusion {occlusion!r} acts on a feature map, which {backbone} (a ViT) does not "
                              "have; pick an image-level method (igo, random_erasing, ...) or a convolutional backbone")
        self.global_reduction = reduction(self.trunk.feature_dim, reduction_dim)
        self.global_classifier = classifier(reduction_dim, num_classes)
        self.mask_resize = mask_resize
        self.suppression, self.use_mask_loss = False, False
        self.feature_dim = reduction_dim
        self.fixbase_modules = FIXBASE_MODULES
        self.spec: dict[str, Any] = {}

    def feature_maps(self, images: Tensor) -> dict[str, Tensor]:
        """The trunk's last map (conv nets, Swin) for activation figures; a ViT has none."""
        if not self.trunk.has_map:
            raise ConfigError(f"{self.trunk.backbone} is a ViT: it has tokens, not a feature map to draw")
        return {"global": self.trunk.forward_map(images)}

    def forward(self, images: Tensor, progress: float = 0.0,
                generator: torch.Generator | None = None) -> IGOASOutput | Tensor:
        """Training: an `IGOASOutput` (global logits only); evaluation: the L2-normalised embedding."""
        if not self.training:
            return self.embed(images)
        mask = None
        if self.occlusion.level == "input":
            images, mask = self.occlusion(images, progress, generator)
        features = self.trunk.forward_map(images)
        if mask is None:  # a feature-level method drops its band on the last map
            features, mask = self.occlusion(features, progress, generator)
        feature = self.global_reduction(self.trunk.pool(features))
        global_map = features if self.trunk.has_map else None
        visible = resize_mask(mask, global_map, self.mask_resize) if global_map is not None else mask.float()
        return IGOASOutput(logits={"global": self.global_classifier(feature)}, features={"global": feature},
                           attention=None, global_map=global_map, visible_mask=visible,
                           occluded_fraction=self.occlusion.occluded_fraction, use_mask_loss=False)

    def embed(self, images: Tensor) -> Tensor:
        """The retrieval embedding (B x reduction_dim), fp32 and L2-normalised like IGOAS's."""
        return F.normalize(self.global_reduction(self.trunk(images)).float(), dim=1)
