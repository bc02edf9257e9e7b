"""ImageNet weights for the ResNet trunk: torchvision's weights API or a local file.

`pretrained` names the weights explicitly: `imagenet1k_v1` (the original torchvision
weights, what the authors' torchvision 0.8 `resnet50(pretrained=True)` loaded:
resnet50-0676ba61), `imagenet1k_v2` (torchvision's newer recipe, today's `DEFAULT` for
ResNet-50: resnet50-11ad3fa6), or a path to a local state dict. `True` means
`imagenet1k_v1`, as torchvision's own legacy `pretrained=True` did. The weights are loaded
into the plain torchvision ResNet before it is cut into stem, stages 1-3 and the two
stage-4 copies, so both copies start from the same weights.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from igoas.config import weights_name
from igoas.model.backbone import BACKBONES
from igoas.utils.errors import CheckpointError
from igoas.utils.extras import optional

# Keys a checkpoint may wrap its state dict in (torchreid, timm training scripts, ours).
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")

# An igoas network's trunk pieces -> the torchvision ResNet names they came from: the
# global branch's stage 4 is the trunk's layer4 (strides live in the modules, not the weights).
NETWORK_TO_TORCHVISION = (("stem.0.", "conv1."), ("stem.1.", "bn1."), ("layer1.", "layer1."), ("layer2.", "layer2."),
                          ("layer3.", "layer3."), ("global_stage4.", "layer4."))


def trunk_from_network_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The torchvision-named trunk inside an igoas network's state dict (stem, stages 1-3,
    the global stage 4); heads, the suppression branch and extra blocks are left out."""
    trunk: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for ours, theirs in NETWORK_TO_TORCHVISION:
            if key.startswith(ours):
                trunk[theirs + key[len(ours):]] = value
    return trunk

# torchvision weight sets selectable by name; `True` is an alias of the first (the authors').
def load_pretrained(trunk: nn.Module, backbone: str, pretrained: bool | str | Path | None) -> None:
    """Fill `trunk` (a torchvision ResNet) with ImageNet weights; no-op for `False`."""
    if pretrained is False or pretrained is None:
        return
    name = weights_name(pretrained)
    if name is not None:
        weights = torchvision_weights(backbone, name)
        state, source = _download_torchvision(backbone, weights), f"torchvision {weights}"
    else:
        state, source = read_state_dict(Path(pretrained)), str(pretrained)
    load_trunk_state(trunk, state, source)


def torchvision_weights(backbone: str, name: str) -> Any:
    """The torchvision weights enum member for `name` (e.g. `ResNet50_Weights.IMAGENET1K_V1`)."""
    from torchvision import models

    if BACKBONES[backbone].weights_enum is None:
        raise CheckpointError(f"{backbone} has no torchvision weights (torchvision does not publish it), so "
                              f"pretrained={name!r} cannot be fetched; pass the path of a local state dict "
                              "(e.g. IBN-Net's or fast-reid's resnet50_ibn_a .pth) or pretrained=false")
    enum = getattr(models, BACKBONES[backbone].weights_enum)
    available = [member.name.lower() for member in enum]
    if name.upper() not in enum.__members__:
        raise CheckpointError(f"{backbone} has no torchvision weights {name!r}; available: {', '.join(available)} "
                              "(or pass the path of a local state dict)")
    return enum[name.upper()]


def torchvision_hash_prefixes(backbone: str) -> dict[str, str]:
    """{SHA-256 prefix in the file name: weight-set name} for `backbone`'s torchvision
    weights (`resnet50-0676ba61.pth` -> {"0676ba61": "imagenet1k_v1"}), as torch.hub checks them."""
    from torchvision import models

    if backbone not in BACKBONES or BACKBONES[backbone].weights_enum is None:
        return {}
    prefixes = {}
    for member in getattr(models, BACKBONES[backbone].weights_enum):
        found = re.search(r"-([0-9a-f]{8,})\.", Path(member.url).name)
        if found:
            prefixes[found.group(1)] = member.name.lower()
    return prefixes


def _download_torchvision(backbone: str, weights: Any) -> dict[str, torch.Tensor]:
    file_name = Path(weights.url).name
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        return weights.get_state_dict(progress=False)
    except Exception as err:  # network, proxy, disk: all end the same way for the user
        raise CheckpointError(
            f"could not fetch ImageNet weights {weights} for {backbone} from {weights.url} "
            f"({type(err).__name__}: {err}). Without network, download {file_name} elsewhere and "
            f"either place it at {cache / file_name} (torchvision's cache, used without network) "
            f"or pass its path (pretrained='path/to/{file_name}')."
        ) from err


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A ResNet state dict from a .pth/.pt/.safetensors file, unwrapped and de-prefixed."""
    if not path.is_file():
        raise CheckpointError(f"pretrained weights file {path} does not exist; pass the path of a "
                              "torchvision or timm ResNet state dict")
    try:
        if path.suffix == ".safetensors":
            state = optional("safetensors.torch", "reading .safetensors weights").load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        # torch's refusal runs to a dozen lines of advice about torch.load: keep its reason only
        lines = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()
        kind = "an ONNX model, not weights; " if path.suffix.lower() == ".onnx" else ""
        raise CheckpointError(f"cannot read pretrained weights {path} ({lines[0] if lines else type(err).__name__}): "
                              f"{kind}give a tensor-only ResNet state dict saved with torch.save (torchvision or "
                              "timm), an igoas checkpoint or the trunk.pth of `igoas pretrain`") from None
    for key in _WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise CheckpointError(f"pretrained weights {path} hold a {type(state).__name__}, "
                              "not a state dict of tensors")
    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:  # a run would start from (and silently spread) them
        raise CheckpointError(f"pretrained weights {path}: {len(bad)} tensor(s) hold NaN or Inf "
                              f"({', '.join(bad[:4])}); the file comes from a diverged run or is damaged")
    # DataParallel training leaves a `module.` prefix on every key.
    state = {k.removeprefix("module."): v for k, v in state.items()}
    # An igoas checkpoint (`igoas train`, `igoas pretrain`'s run): its trunk, under torchvision's names.
    return trunk_from_network_state(state) if any(k.startswith("stem.0.") for k in state) else state


def load_trunk_state(trunk: nn.Module, state: dict[str, torch.Tensor], source: str, classifier: str = "fc.",
                     expect: str = "a torchvision- or timm-format state dict of the same ResNet depth",
                     shape_hint: str = "is it a different ResNet depth?") -> None:
    """Load strictly, ignoring only the ImageNet classifier (keys under `classifier`: `fc.*`
    for torchvision and timm ResNets); `expect`/`shape_hint` say what file would fit."""
    state = {k: v for k, v in state.items() if not k.startswith(classifier)}
    expected = {k for k in trunk.state_dict() if not k.startswith(classifier)}
    # Older torchvision files predate BatchNorm's step counter; PyTorch fills it in.
    missing = sorted(k for k in expected - state.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"pretrained weights {source} do not match the backbone: missing keys {_short(missing)}, "
            f"unexpected keys {_short(unexpected)}. Pass {expect}."
        )
    shapes = [k for k in expected & state.keys() if state[k].shape != trunk.state_dict()[k].shape]
    if shapes:
        raise CheckpointError(f"pretrained weights {source} have wrong shapes for {_short(sorted(shapes))}; "
                              f"{shape_hint}")
    trunk.load_state_dict(state, strict=False)


def _short(keys: list[str], limit: int = 8) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
