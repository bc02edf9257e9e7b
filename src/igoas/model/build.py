"""`build_model`: every network variant by name, with a spec that rebuilds it."""
from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any, Callable

from igoas.model.network import IGOAS
from igoas.utils.errors import ConfigError


def _igoas(num_classes: int, **options: Any) -> IGOAS:
    return IGOAS(num_classes, **options)


def _igoas_no_osm(num_classes: int, **options: Any) -> IGOAS:
    # Same layers as igoas (checkpoints are interchangeable); only the mask loss is off.
    return IGOAS(num_classes, **{**options, "use_mask_loss": False})


def _baseline(num_classes: int, **options: Any) -> IGOAS:
    return IGOAS(num_classes, **{"occlusion": "none", **options, "suppression": False})


MODEL_BUILDERS: dict[str, Callable[..., IGOAS]] = {
    "igoas": _igoas,
    "igoas_no_osm": _igoas_no_osm,
    "baseline": _baseline,
}

_KNOWN_OPTIONS = set(inspect.signature(IGOAS.__init__).parameters) - {"self", "num_classes", "backbone",
                                                                      "pretrained", "suppression"}


def build_model(name: str = "igoas", num_classes: int = 751, pretrained: bool | str | Path = False,
                backbone: str = "resnet50", options: dict[str, Any] | None = None, **more_options: Any) -> IGOAS:
    """Build a network by name (`igoas`, `igoas_no_osm`, `baseline`).

    `pretrained`: False, True (torchvision ImageNet weights) or a local state-dict path.
    Options may come as a dict (`options=`, as stored in `model.spec`) or as keywords;
    `build_model(**model.spec)` rebuilds the same architecture.
    """
    if name not in MODEL_BUILDERS:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(MODEL_BUILDERS)}")
    merged = {**(options or {}), **more_options}
    unknown = sorted(set(merged) - _KNOWN_OPTIONS)
    if unknown:
        raise ConfigError(f"unknown model option(s) {unknown} for {name!r}; known options: {sorted(_KNOWN_OPTIONS)}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be a positive number of training identities, got {num_classes}")
    if isinstance(pretrained, Path):
        pretrained = str(pretrained)
    model = MODEL_BUILDERS[name](num_classes, backbone=backbone, pretrained=pretrained, **merged)
    model.spec = {"name": name, "num_classes": num_classes, "backbone": backbone, "options": copy.deepcopy(merged)}
    return model
