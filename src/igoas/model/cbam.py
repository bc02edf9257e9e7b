"""CBAM (Woo et al. 2018): channel attention followed by spatial attention.

Parameter names (`fc1`, `fc2`, `conv_after_concat`) and shapes follow the authors'
CBAM so their checkpoints map one-to-one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igoas.model.heads import global_max_pool


class CBAM(nn.Module):
    """x -> x * channel_attention(x) -> (that) * spatial_attention(that).

    The spatial convolution is 3x3 in the authors' code and 7x7 in the CBAM paper
    (`spatial_kernel`).
    """

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 3) -> None:
        super().__init__()
        if spatial_kernel % 2 != 1:
            raise ValueError(f"cbam spatial kernel must be odd to keep the map size, got {spatial_kernel}")
        hidden = channels // reduction
        # The shared MLP is written as 1x1 convolutions with bias, as in the authors' code.
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)
        self.conv_after_concat = nn.Conv2d(2, 1, kernel_size=spatial_kernel, padding=spatial_kernel // 2)

    def _shared_mlp(self, descriptor: Tensor) -> Tensor:
        return self.fc2(torch.relu(self.fc1(descriptor)))

    def forward(self, x: Tensor) -> Tensor:
        avg = F.adaptive_avg_pool2d(x, 1)
        mx = global_max_pool(x)
        x = x * torch.sigmoid(self._shared_mlp(avg) + self._shared_mlp(mx))
        spatial = torch.cat([x.mean(dim=1, keepdim=True), x.max(dim=1, keepdim=True).values], dim=1)
        return x * torch.sigmoid(self.conv_after_concat(spatial))
