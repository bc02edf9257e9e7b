"""Torchvision ResNet trunks cut into the pieces the IGOAS network shares or duplicates.

Stages 1-3 are shared by both branches; stage 4 is duplicated per branch with its first
block's stride set to 1, so a 384x128 input keeps a 24x8 map (SPEC section 1).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

from torch import nn
from torchvision.models import resnet

from igoas.model.ibn import resnet50_ibn_a, resnet101_ibn_a


@dataclass(frozen=True)
class BackboneInfo:
    """How to build one torchvision ResNet and where its ImageNet weights live.

    `weights_enum` is None for the ResNets igoas builds itself (IBN-a): torchvision has no
    weights for them, only a local file can fill them.
    """

    constructor: Callable[..., resnet.ResNet]
    weights_enum: str | None
    block: type[nn.Module]


BACKBONES: dict[str, BackboneInfo] = {
    "resnet18": BackboneInfo(resnet.resnet18, "ResNet18_Weights", resnet.BasicBlock),
    "resnet34": BackboneInfo(resnet.resnet34, "ResNet34_Weights", resnet.BasicBlock),
    "resnet50": BackboneInfo(resnet.resnet50, "ResNet50_Weights", resnet.Bottleneck),
    "resnet101": BackboneInfo(resnet.resnet101, "ResNet101_Weights", resnet.Bottleneck),
    "resnet50_ibn_a": BackboneInfo(resnet50_ibn_a, None, resnet.Bottleneck),
    "resnet101_ibn_a": BackboneInfo(resnet101_ibn_a, None, resnet.Bottleneck),
}


def stage_channels(stage: nn.Sequential) -> int:
    """Output channels of a ResNet stage (512 for basic blocks, 2048 for bottlenecks at stage 4)."""
    last = stage[-1]
    norm = last.bn3 if isinstance(last, resnet.Bottleneck) else last.bn2
    return norm.num_features


def stride_one_stage(stage: nn.Sequential) -> nn.Sequential:
    """A deep copy of `stage` whose first block no longer down-samples.

    Torchvision puts the stride on conv2 of a Bottleneck and on conv1 of a BasicBlock;
    the shortcut's 1x1 conv carries it too. Weights are unchanged, so pretrained stage-4
    weights stay valid.
    """
    stage = copy.deepcopy(stage)
    first = stage[0]
    strided_conv = first.conv2 if isinstance(first, resnet.Bottleneck) else first.conv1
    strided_conv.stride = (1, 1)
    if first.downsample is not None:
        first.downsample[0].stride = (1, 1)
    first.stride = 1
    return stage


def extra_block(block: type[nn.Module], channels: int) -> nn.Module:
    """The authors' extra residual block on the stage-4 width (PyTorch default init)."""
    if block is resnet.Bottleneck:
        return resnet.Bottleneck(channels, channels // resnet.Bottleneck.expansion)
    return resnet.BasicBlock(channels, channels)


def build_trunk(name: str) -> resnet.ResNet:
    """A randomly initialised torchvision ResNet by name (weights are loaded separately)."""
    return BACKBONES[name].constructor(weights=None)


def stem_of(trunk: resnet.ResNet) -> nn.Sequential:
    """conv1, bn1, relu, maxpool as one module, indices 0..3 (the authors' `layer0`)."""
    return nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool)
