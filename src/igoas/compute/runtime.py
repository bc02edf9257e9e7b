"""`Runtime`: where and how a network runs, settled once from the "auto" options so that
training, evaluation, extraction and serving make the same choices on the same machine."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from igoas.compute.distributed import DistributedContext, resolve_device
from igoas.compute.speed import resolve_channels_last, resolve_precision


@dataclass(frozen=True)
class Runtime:
    """Where and how a network runs: device, precision ("fp32", "tf32", "bf16", "fp16"),
    channels_last, and the processes sharing the work (None: this process alone)."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    channels_last: bool = False
    ctx: DistributedContext | None = None

    @classmethod
    def resolve(cls, device: str | torch.device = "auto", precision: str = "fp32",
                channels_last: bool | str = False, ctx: DistributedContext | None = None,
                option: str = "device") -> "Runtime":
        """Settle "auto" choices for this machine (device names as `train.device`; a bad
        one is refused naming `option`)."""
        device = resolve_device(device, option=option) if isinstance(device, str) else torch.device(device)
        precision = resolve_precision(precision, device)
        return cls(device, precision, resolve_channels_last(channels_last, device, precision), ctx)

    @property
    def description(self) -> str:
        """What the command lines print before they embed: "cpu, fp32" (+ ", channels_last")."""
        return f"{self.device}, {self.precision}" + (", channels_last" if self.channels_last else "")

    @property
    def distributed(self) -> bool:
        return self.ctx is not None and self.ctx.enabled
