"""Pooling, the 512-d reduction and the classifiers of each branch, with the authors' init."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def reduction(in_channels: int, out_features: int = 512) -> nn.Sequential:
    """Linear -> BatchNorm1d -> ReLU; Kaiming-normal (fan_out) Linear, BN weight ~ N(1, 0.02)."""
    head = nn.Sequential(nn.Linear(in_channels, out_features), nn.BatchNorm1d(out_features), nn.ReLU())
    nn.init.kaiming_normal_(head[0].weight, a=0, mode="fan_out")
    nn.init.zeros_(head[0].bias)
    nn.init.normal_(head[1].weight, 1.0, 0.02)
    nn.init.zeros_(head[1].bias)
    return head


def classifier(in_features: int, num_classes: int, bias: bool = True, std: float = 0.01) -> nn.Linear:
    """Identity classifier with weights ~ N(0, std) and zero bias (IGOAS: std 0.01, with a
    bias; BoT's BNNeck classifier: std 0.001 and no bias)."""
    layer = nn.Linear(in_features, num_classes, bias=bias)
    nn.init.normal_(layer.weight, 0.0, std)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def bn_neck(features: int) -> nn.BatchNorm1d:
    """BoT's BNNeck (Luo et al. 2019, modeling/baseline.py): BatchNorm1d with weight 1 and
    a shift fixed at 0. The shift is a zero buffer, not a parameter with gradients off, so
    no later `requires_grad_` (the fixbase warm-up opens whole modules) can let it learn;
    the state-dict keys stay BatchNorm's own."""
    neck = nn.BatchNorm1d(features)
    nn.init.ones_(neck.weight)
    del neck.bias
    neck.register_buffer("bias", torch.zeros(features))
    return neck


def _avg_pool(x: Tensor) -> Tensor:
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


def global_max_pool(x: Tensor) -> Tensor:
    """B x C x H x W -> B x C x 1 x 1, the same values and gradients as
    `adaptive_max_pool2d(x, 1)` (ties send their gradient to one element), but with a
    backward pass that CUDA also runs under deterministic algorithms (the adaptive pool's
    CUDA backward refuses them)."""
    return x.flatten(2).max(dim=2).values[..., None, None]


def _max_pool(x: Tensor) -> Tensor:
    return global_max_pool(x).flatten(1)


# The global branch averages, the suppression branch takes the maximum (SPEC section 3).
# Functions, not modules, so the network's children stay exactly the authors' layers.
POOLING: dict[str, Callable[[Tensor], Tensor]] = {"avg": _avg_pool, "max": _max_pool}
