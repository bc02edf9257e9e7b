"""`build_model`: every network variant by name, with a spec that rebuilds it."""
from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any, Callable

from torch import nn

from igoas.model.backbone import BACKBONES
from igoas.model.network import IGOAS
from igoas.model.timm_backbones import TIMM_BACKBONES
from igoas.model.timm_network import TimmBaseline
from igoas.utils.errors import ConfigError


def _igoas(num_classes: int, **options: Any) -> IGOAS:
    return IGOAS(num_classes, **options)


def _igoas_no_osm(num_classes: int, **options: Any) -> IGOAS:
    # Same layers as igoas (checkpoints are interchangeable); only the mask loss is off.
    return IGOAS(num_classes, **{**options, "use_mask_loss": False})


def _baseline(num_classes: int, **options: Any) -> nn.Module:
    if options["backbone"] in TIMM_BACKBONES:
        return TimmBaseline(num_classes, **options)
    return IGOAS(num_classes, **{"occlusion": "none", **options, "suppression": False})


MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "igoas": _igoas,
    "igoas_no_osm": _igoas_no_osm,
    "baseline": _baseline,
}

_BUILT_BY_BUILD_MODEL = {"self", "num_classes", "backbone", "pretrained", "suppression"}
_KNOWN_OPTIONS = set(inspect.signature(IGOAS.__init__).parameters) - _BUILT_BY_BUILD_MODEL
# A timm trunk carries only the baseline's heads, and the input geometry ViT and Swin are built for.
_TIMM_OPTIONS = set(inspect.signature(TimmBaseline.__init__).parameters) - _BUILT_BY_BUILD_MODEL


def build_model(name: str = "igoas", num_classes: int = 751, pretrained: bool | str | Path = False,
                backbone: str = "resnet50", options: dict[str, Any] | None = None, **more_options: Any) -> nn.Module:
    """Build a network by name (`igoas`, `igoas_no_osm`, `baseline`).

    `backbone`: a torchvision ResNet of `BACKBONES` (every model) or a timm backbone of
    `TIMM_BACKBONES` (the baseline only: IGOAS is built on ResNet stages).
    `pretrained`: False, True (torchvision ImageNet weights; timm's default weights for a
    timm backbone) or a local state-dict path.
    Options may come as a dict (`options=`, as stored in `model.spec`) or as keywords;
    `build_model(**model.spec)` rebuilds the same architecture.
    """
    if name not in MODEL_BUILDERS:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(MODEL_BUILDERS)}")
    is_timm = backbone in TIMM_BACKBONES
    if backbone not in BACKBONES and not is_timm:
        raise ConfigError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)} (every model) or "
                          f"{sorted(TIMM_BACKBONES)} (baseline only)")
    if is_timm and name != "baseline":
        raise ConfigError(f"model {name!r} is built on ResNet stages and supports the backbones {sorted(BACKBONES)}; "
                          f"{backbone!r} works with model 'baseline' only")
    merged = {**(options or {}), **more_options}
    known = _TIMM_OPTIONS if is_timm else _KNOWN_OPTIONS
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ConfigError(f"unknown model option(s) {unknown} for {name!r} on {backbone}; known options: "
                          f"{sorted(known)}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be a positive number of training identities, got {num_classes}")
    if isinstance(pretrained, Path):
        pretrained = str(pretrained)
    model = MODEL_BUILDERS[name](num_classes, backbone=backbone, pretrained=pretrained, **merged)
    model.spec = {"name": name, "num_classes": num_classes, "backbone": backbone, "options": copy.deepcopy(merged)}
    return model
