"""The compared methods (arms) of the ablation and the training config of each.

Every arm trains with the same recipe; an arm changes only the network (`build_model`
name) and its training occlusion, whose options follow from the recipe's IGO schedule.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig

from igoas.config import apply_overrides, load_config, to_dict, validate
from igoas.utils.errors import ConfigError

DEFAULT_RECIPE = "synthetic_study"


def _no_options(recipe_options: Mapping[str, Any]) -> dict[str, Any]:
    return {}


def _recipe_options(recipe_options: Mapping[str, Any]) -> dict[str, Any]:
    return dict(recipe_options)


def _erase_half_the_images(recipe_options: Mapping[str, Any]) -> dict[str, Any]:
    # Zhong et al.'s probability 0.5: a single-branch network that never sees an unerased
    # image during training meets only unerased ones at test time (measured: it collapses).
    return {"probability": 0.5}


def _fixed_at_final_ratio(recipe_options: Mapping[str, Any]) -> dict[str, Any]:
    # The size the incremental schedule ends at, held from the first step; fill and aspect as the recipe's IGO.
    return {**recipe_options, "area_ratio": recipe_options.get("final", 1 / 3)}


@dataclass(frozen=True)
class Arm:
    """One compared method: the network (`build_model` name), its training occlusion, and
    how its occlusion options follow from the recipe's (the IGO schedule)."""

    model: str
    occlusion: str
    label: str  # short name for figure columns
    description: str
    occlusion_options: Callable[[Mapping[str, Any]], dict[str, Any]] = _no_options


ARMS: dict[str, Arm] = {
    "baseline": Arm("baseline", "none", "baseline", "global branch only, no occlusion"),
    "random_erasing": Arm("baseline", "random_erasing", "+ RE", "baseline + single-image random erasing (p = 0.5)",
                          _erase_half_the_images),
    "batch_dropblock": Arm("baseline", "batch_dropblock", "+ BDB", "baseline + batch DropBlock on the stage-4 map"),
    "igoas_no_osm": Arm("igoas_no_osm", "igo", "no OSM", "IGOAS without the OSM mask loss", _recipe_options),
    "igo_fixed": Arm("igoas", "igo_fixed", "fixed IGO", "IGOAS with fixed-size (non-incremental) occlusion",
                     _fixed_at_final_ratio),
    "igoas": Arm("igoas", "igo", "IGOAS", "full IGOAS (incremental IGO + OSM)", _recipe_options),
}


def arm_config(arm: str, seed: int, recipe: str | os.PathLike[str] | DictConfig = DEFAULT_RECIPE,
               overrides: Iterable[str] = ()) -> DictConfig:
    """The training config of one arm: the recipe (a preset, a YAML path or a loaded config,
    which is not changed) with `overrides` applied, then the arm's network and occlusion,
    and `train.seed=seed`."""
    if arm not in ARMS:
        raise ConfigError(f"unknown ablation arm {arm!r}; choose from {', '.join(ARMS)}")
    if isinstance(recipe, DictConfig):
        cfg = apply_overrides(recipe.copy(), overrides)
    else:
        cfg = load_config(recipe, overrides)
    spec = ARMS[arm]
    recipe_options = to_dict(cfg.model.occlusion_options)
    cfg.model.name = spec.model
    cfg.model.occlusion = spec.occlusion
    cfg.model.occlusion_options = spec.occlusion_options(recipe_options)
    cfg.train.seed = int(seed)
    validate(cfg)
    return cfg


def seed_list(seeds: int | Sequence[int]) -> list[int]:
    """A count n (seeds 1..n) or a list of distinct seeds, as a list."""
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ConfigError(f"the study needs at least one seed, got seeds={seeds}")
        return list(range(1, int(seeds) + 1))
    listed = [int(seed) for seed in seeds]
    if not listed or len(set(listed)) != len(listed):
        raise ConfigError(f"seeds must be a count or a list of distinct integers, got {list(seeds)}")
    return listed


def arm_list(methods: Sequence[str] | None) -> list[str]:
    """The chosen arms in the order given (default: all of ARMS), checked."""
    chosen = list(ARMS) if not methods else list(dict.fromkeys(methods))
    unknown = [name for name in chosen if name not in ARMS]
    if unknown:
        raise ConfigError(f"unknown ablation arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    return chosen
