"""ResNet-IBN-a (Pan et al., ECCV 2018): instance-batch normalisation in the residual blocks.

IBN-a replaces the first normalisation (`bn1`, after the 1x1 `conv1`) of every bottleneck
in stages 1-3 by an `IBN` layer: the first half of the channels go through an
InstanceNorm with affine parameters, the rest through a BatchNorm; the stem and stage 4
stay BatchNorm. The module names (`bn1.IN`, `bn1.BN`) and the stride on `conv2` are
those of the authors' IBN-Net and of fast-reid's `resnet_ibn_a`, so their published
state dicts load as they are. InstanceNorm(affine) and BatchNorm hold the same number
of parameters, so ResNet-50-IBN-a counts exactly torchvision ResNet-50's 25,557,032.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models import resnet

# Stages whose bottlenecks get IBN-a (stage 4 keeps BatchNorm: its features are for discrimination).
IBN_STAGES = ("layer1", "layer2", "layer3")


class IBN(nn.Module):
    """InstanceNorm (affine) on the first `ratio` of the channels, BatchNorm on the rest.

    Instance normalisation removes appearance (colour, contrast) variation, the batch
    part keeps the content discriminative.
    """

    def __init__(self, planes: int, ratio: float = 0.5) -> None:
        super().__init__()
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x: Tensor) -> Tensor:
        first, rest = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(first.contiguous()), self.BN(rest.contiguous())], dim=1)


def _ibn_a(layers: list[int]) -> resnet.ResNet:
    """A torchvision bottleneck ResNet whose stages 1-3 use IBN-a in every block.

    The blocks stay torchvision `Bottleneck`s (only `bn1` changes), so everything that cuts
    or re-strides a torchvision ResNet (stem, stage 4 with stride 1) works unchanged.
    """
    model = resnet.ResNet(resnet.Bottleneck, layers)
    for stage_name in IBN_STAGES:
        for block in getattr(model, stage_name):
            block.bn1 = IBN(block.bn1.num_features)  # IN/BN weights 1, biases 0: torchvision's own BN init
    return model


def resnet50_ibn_a(weights: None = None) -> resnet.ResNet:
    """ResNet-50-IBN-a, randomly initialised (`weights` is always None: the weights are loaded separately)."""
    return _ibn_a([3, 4, 6, 3])


def resnet101_ibn_a(weights: None = None) -> resnet.ResNet:
    """ResNet-101-IBN-a, randomly initialised."""
    return _ibn_a([3, 4, 23, 3])
