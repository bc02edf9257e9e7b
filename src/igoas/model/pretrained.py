"""ImageNet weights for the ResNet trunk: torchvision's weights API or a local file.

The weights are loaded into the plain torchvision ResNet before it is cut into stem,
stages 1-3 and the two stage-4 copies, so both copies start from the same weights.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from igoas.errors import CheckpointError
from igoas.model.backbone import BACKBONES

# Keys a checkpoint may wrap its state dict in (torchreid, timm training scripts, ours).
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")


def load_pretrained(trunk: nn.Module, backbone: str, pretrained: bool | str | Path) -> None:
    """Fill `trunk` (a torchvision ResNet) with ImageNet weights; no-op for `False`."""
    if pretrained is False or pretrained is None:
        return
    if pretrained is True:
        state = _download_torchvision(backbone)
        source = f"torchvision {BACKBONES[backbone].weights_enum}.DEFAULT"
    else:
        state = read_state_dict(Path(pretrained))
        source = str(pretrained)
    load_trunk_state(trunk, state, source)


def _download_torchvision(backbone: str) -> dict[str, torch.Tensor]:
    from torchvision import models

    weights = getattr(models, BACKBONES[backbone].weights_enum).DEFAULT
    try:
        return weights.get_state_dict(progress=False)
    except Exception as err:  # network, proxy, disk: all end the same way for the user
        raise CheckpointError(
            f"could not fetch ImageNet weights {weights} for {backbone} from {weights.url} "
            f"({type(err).__name__}: {err}). Without network, download that file elsewhere "
            f"and either pass its path (pretrained='path/to/{Path(weights.url).name}') or "
            f"copy it into torchvision's cache folder {Path(torch.hub.get_dir()) / 'checkpoints'}."
        ) from err


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A ResNet state dict from a .pth/.pt/.safetensors file, unwrapped and de-prefixed."""
    if not path.is_file():
        raise CheckpointError(f"pretrained weights file {path} does not exist; pass the path of a "
                              "torchvision or timm ResNet state dict")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read pretrained weights {path} ({type(err).__name__}: {err}); "
                              "it must be a tensor-only state dict saved with torch.save") from err
    for key in _WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise CheckpointError(f"pretrained weights {path} hold a {type(state).__name__}, "
                              "not a state dict of tensors")
    # DataParallel training leaves a `module.` prefix on every key.
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_trunk_state(trunk: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load strictly, ignoring only the ImageNet classifier (`fc.*`, torchvision and timm)."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = {k for k in trunk.state_dict() if not k.startswith("fc.")}
    # Older torchvision files predate BatchNorm's step counter; PyTorch fills it in.
    missing = sorted(k for k in expected - state.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"pretrained weights {source} do not match the backbone: missing keys {_short(missing)}, "
            f"unexpected keys {_short(unexpected)}. Pass a torchvision- or timm-format state dict "
            "of the same ResNet depth."
        )
    shapes = [k for k in expected & state.keys() if state[k].shape != trunk.state_dict()[k].shape]
    if shapes:
        raise CheckpointError(f"pretrained weights {source} have wrong shapes for {_short(sorted(shapes))}; "
                              "is it a different ResNet depth?")
    trunk.load_state_dict(state, strict=False)


def _short(keys: list[str], limit: int = 8) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
