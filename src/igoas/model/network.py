"""The IGOAS network (global branch + adversarial suppression branch) and the baseline.

Training: the raw batch and its occluded copy go through the shared stem and stages 1-3
as one batch of 2B; the raw half continues in the global branch, the occluded half in the
suppression branch (CBAM, stage 4, extra block, OSM). Evaluation: no occlusion, both
branches see the raw image, each 512-d feature is L2-normalised and the two are
concatenated (SPEC sections 1, 3, 5).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igoas.model.backbone import BACKBONES, build_trunk, extra_block, stage_channels, stem_of, stride_one_stage
from igoas.model.cbam import CBAM
from igoas.model.heads import POOLING, bn_neck, classifier, reduction
from igoas.model.occlusion import Occlusion, build_occlusion
from igoas.model.osm import MASK_RESIZE, OSM, resize_mask
from igoas.model.pretrained import load_pretrained
from igoas.utils.errors import ConfigError

# The global branch's head: IGOAS's 512-d Linear-BN-ReLU reduction, or BoT's BNNeck
# (a bias-free BatchNorm on the pooled map; the baseline only).
NECKS = ("reduction", "bnneck")

# Children that train during the "fixbase" warm-up (SPEC section 6); absent ones are skipped.
FIXBASE_CANDIDATES = ("global_bottleneck", "suppression_bottleneck", "suppression_cbam", "osm",
                      "global_reduction", "global_neck", "suppression_reduction", "global_classifier",
                      "suppression_classifier")


@dataclass
class IGOASOutput:
    """Everything one training forward produces for the losses and the logs.

    `use_mask_loss` travels with the result so `compute_losses` knows whether this model
    wants the OSM mask loss (False for `igoas_no_osm` and the baseline).
    """

    logits: dict[str, Tensor]
    features: dict[str, Tensor]
    attention: Tensor | None
    global_map: Tensor | None
    visible_mask: Tensor
    occluded_fraction: float
    use_mask_loss: bool = True


class IGOAS(nn.Module):
    """IGOAS (`suppression=True`) or the stride-1 ResNet baseline (`suppression=False`).

    Options (defaults = the authors' code): `extra_bottleneck` adds their extra residual
    block after each stage 4; `pre_stage4_cbam` their CBAM on the stage-3 map before the
    suppression stage 4; `cbam_spatial_kernel` 3 (code) or 7 (CBAM paper);
    `cbam_reduction` 16; `mask_resize` "bilinear" (align_corners=True), "nearest" or
    "area"; `global_pooling` "avg" and `suppression_pooling` "max"; `reduction_dim` 512 per
    branch; `occlusion` / `occlusion_options` pick the method from OCCLUSION_METHODS;
    `use_mask_loss` tells the losses whether to add the OSM mask term; `neck` "reduction"
    (IGOAS) or "bnneck" (BoT, baseline only: the triplet sees the pooled feature, the
    bias-free classifier and the embedding the BatchNorm'd one).
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50", pretrained: bool | str = False,
                 suppression: bool = True, extra_bottleneck: bool = True, pre_stage4_cbam: bool = True,
                 cbam_spatial_kernel: int = 3, cbam_reduction: int = 16, mask_resize: str = "bilinear",
                 global_pooling: str = "avg", suppression_pooling: str = "max", reduction_dim: int = 512,
                 occlusion: str = "igo", occlusion_options: dict[str, Any] | None = None,
                 use_mask_loss: bool = True, neck: str = "reduction") -> None:
        super().__init__()
        if neck not in NECKS:
            raise ConfigError(f"model option neck={neck!r} is unknown; choose one of {', '.join(NECKS)}")
        if neck == "bnneck" and suppression:
            raise ConfigError("model option neck='bnneck' is BoT's head for the single-branch baseline; "
                              "use it with model.name=baseline, or leave neck at 'reduction' for IGOAS")
        _check_choice("backbone", backbone, BACKBONES)
        _check_choice("mask_resize", mask_resize, MASK_RESIZE)
        _check_choice("global_pooling", global_pooling, POOLING)
        _check_choice("suppression_pooling", suppression_pooling, POOLING)
        trunk = build_trunk(backbone)
        load_pretrained(trunk, backbone, pretrained)
        block = BACKBONES[backbone].block
        stage3_channels, channels = stage_channels(trunk.layer3), stage_channels(trunk.layer4)

        self.stem = stem_of(trunk)
        self.layer1, self.layer2, self.layer3 = trunk.layer1, trunk.layer2, trunk.layer3
        stage4 = stride_one_stage(trunk.layer4)
        self.global_stage4 = stage4
        if extra_bottleneck:
            self.global_bottleneck = extra_block(block, channels)
        if suppression:
            if pre_stage4_cbam:
                self.suppression_cbam = CBAM(stage3_channels, cbam_reduction, cbam_spatial_kernel)
            self.suppression_stage4 = stride_one_stage(stage4)
            if extra_bottleneck:
                self.suppression_bottleneck = extra_block(block, channels)
            self.osm = OSM(channels, cbam_reduction, cbam_spatial_kernel)
        if neck == "bnneck":
            self.global_neck = bn_neck(channels)
        else:
            self.global_reduction = reduction(channels, reduction_dim)
        if suppression:
            self.suppression_reduction = reduction(channels, reduction_dim)
        # BoT's classifier after its BNNeck: no bias, weights ~ N(0, 0.001).
        self.global_classifier = (classifier(channels, num_classes, bias=False, std=0.001) if neck == "bnneck"
                                  else classifier(reduction_dim, num_classes))
        if suppression:
            self.suppression_classifier = classifier(reduction_dim, num_classes)
            self.concat_classifier = classifier(2 * reduction_dim, num_classes)

        self.suppression = suppression
        self.mask_resize = mask_resize
        self.use_mask_loss = use_mask_loss and suppression
        self.global_pool, self.suppression_pool = POOLING[global_pooling], POOLING[suppression_pooling]
        self.neck = neck
        self.feature_dim = channels if neck == "bnneck" else reduction_dim * (2 if suppression else 1)
        self.fixbase_modules = tuple(name for name in FIXBASE_CANDIDATES if hasattr(self, name))
        # A plain attribute, not a child module: occlusion methods hold no tensors, so the
        # state dict stays exactly the network's layers.
        self.occlusion: Occlusion = build_occlusion(occlusion, **(occlusion_options or {}))
        self.spec: dict[str, Any] = {}

    # ------------------------------------------------------------------ building blocks
    def _trunk(self, images: Tensor) -> Tensor:
        return self.layer3(self.layer2(self.layer1(self.stem(images))))

    def _global_map(self, x: Tensor) -> Tensor:
        x = self.global_stage4(x)
        return self.global_bottleneck(x) if hasattr(self, "global_bottleneck") else x

    def _suppression_stage4(self, x: Tensor) -> Tensor:
        if hasattr(self, "suppression_cbam"):
            x = self.suppression_cbam(x)
        return self.suppression_stage4(x)

    def _suppression_block(self, x: Tensor) -> Tensor:
        return self.suppression_bottleneck(x) if hasattr(self, "suppression_bottleneck") else x

    def _suppression_map(self, x: Tensor) -> Tensor:
        return self._suppression_block(self._suppression_stage4(x))

    def _global_head(self, global_map: Tensor) -> tuple[Tensor, Tensor]:
        """(metric feature, classifier input): both the 512-d reduction, or with the BNNeck
        the pooled feature (triplet, center loss) and its BatchNorm'd copy (ID loss, test)."""
        pooled = self.global_pool(global_map)
        if self.neck == "bnneck":
            return pooled, self.global_neck(pooled)
        feature = self.global_reduction(pooled)
        return feature, feature

    def feature_maps(self, images: Tensor) -> dict[str, Tensor]:
        """Stage-4 maps that each branch pools (global: after the extra block; suppression:
        the OSM output X'), without occlusion, for activation figures."""
        x = self._trunk(images)
        maps = {"global": self._global_map(x)}
        if self.suppression:
            maps["suppression"] = self.osm(self._suppression_map(x))
        return maps

    # ------------------------------------------------------------------ forward
    def forward(self, images: Tensor, progress: float = 0.0,
                generator: torch.Generator | None = None) -> IGOASOutput | Tensor:
        """Training: an `IGOASOutput`; evaluation: the embedding (B x feature_dim)."""
        if not self.training:
            return self.embed(images)
        return self._train_forward(images, progress, generator)

    def embed(self, images: Tensor) -> Tensor:
        """Retrieval embedding: each branch's 512-d feature L2-normalised, concatenated."""
        maps = self.feature_maps(images)
        parts = [self._global_head(maps["global"])[1]]
        if self.suppression:
            parts.append(self.suppression_reduction(self.suppression_pool(maps["suppression"])))
        # fp32 whatever the autocast precision: retrieval indexes and distances want fp32.
        return torch.cat([F.normalize(p.float(), dim=1) for p in parts], dim=1)

    def _occlude_input(self, images: Tensor, progress: float,
                       generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        if self.occlusion.level != "input":
            return images, None
        return self.occlusion(images, progress, generator)

    def _occlude_map(self, feature_map: Tensor, mask: Tensor | None, progress: float,
                     generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        if mask is not None:
            return feature_map, mask
        return self.occlusion(feature_map, progress, generator)

    def _train_forward(self, images: Tensor, progress: float, generator: torch.Generator | None) -> IGOASOutput:
        occluded, mask = self._occlude_input(images, progress, generator)
        if not self.suppression:
            global_map, mask = self._occlude_map(self._global_map(self._trunk(occluded)), mask, progress, generator)
            feature, normalised = self._global_head(global_map)
            return IGOASOutput(
                logits={"global": self.global_classifier(normalised)}, features={"global": feature}, attention=None,
                global_map=global_map, visible_mask=resize_mask(mask, global_map, self.mask_resize),
                occluded_fraction=self.occlusion.occluded_fraction, use_mask_loss=False)

        batch = images.shape[0]
        if occluded is images:
            # Nothing changed the input (feature-level or no occlusion): one pass serves both branches.
            shared = self._trunk(images)
            raw, hidden = shared, shared
        else:
            shared = self._trunk(torch.cat([images, occluded]))
            raw, hidden = shared[:batch], shared[batch:]
        global_map = self._global_map(raw)
        # A feature-level method drops its band on the stage-4 output, before the extra
        # block: dropped after it, the band would reach the OSM as exact zeros, which the
        # CBAM keeps at zero, and the suppression mask loss could never act.
        suppressed, mask = self._occlude_map(self._suppression_stage4(hidden), mask, progress, generator)
        attention = self.osm(self._suppression_block(suppressed))
        global_feature = self.global_reduction(self.global_pool(global_map))
        suppression_feature = self.suppression_reduction(self.suppression_pool(attention))
        logits = {
            "global": self.global_classifier(global_feature),
            "suppression": self.suppression_classifier(suppression_feature),
            "concat": self.concat_classifier(torch.cat([global_feature, suppression_feature], dim=1)),
        }
        return IGOASOutput(
            logits=logits, features={"global": global_feature, "suppression": suppression_feature},
            attention=attention, global_map=global_map, visible_mask=resize_mask(mask, attention, self.mask_resize),
            occluded_fraction=self.occlusion.occluded_fraction, use_mask_loss=self.use_mask_loss)


def _check_choice(option: str, value: str, choices: dict[str, Any]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {option} {value!r}; choose one of {sorted(choices)}")
