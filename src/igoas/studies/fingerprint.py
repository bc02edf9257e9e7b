"""Config fingerprints: what a run learns, without where or how visibly it runs.

Two configs with equal fingerprints train the same model, so a finished run (a study arm,
a pretrained trunk) can be reused instead of trained again, and a folder trained with
another recipe can be named with its differences instead of being silently mixed in.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from igoas.config import RunConfig, keys_marked, to_dict
from igoas.utils.errors import IgoasError

# Keys that change where, in how many pieces or how visibly a run executes, not what it
# learns (marked `runtime` or `ignored` in igoas.config): a study moved to another folder,
# re-run with more workers or threads, or trained in chunks still counts as the same study.
RUNTIME_KEYS = keys_marked("runtime", "ignored")


def as_json(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists), so saved and fresh values compare equal."""
    return json.loads(json.dumps(value))


def fingerprint(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config without RUNTIME_KEYS: two runs with equal fingerprints learn the same thing."""
    values = as_json(to_dict(cfg) if isinstance(cfg, DictConfig) else cfg)
    for key in RUNTIME_KEYS:
        section, name = key.split(".")
        values.get(section, {}).pop(name, None)
    return values


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """`key: old -> new` for every dotted key whose value differs (RUNTIME_KEYS aside).

    A key the old config lacks is a difference unless it is a schema option added to
    igoas since the old config was saved and `new` keeps its default: records and runs made
    before an option existed stay valid, while a key added to a free-form section
    (`data.options`, `data.augment`, `model.occlusion_options`, ...) is a real change.
    """
    a, b = _flat(fingerprint(old)), _flat(fingerprint(new))
    defaults = _schema_defaults()
    return [f"{key}: {a.get(key)!r} -> {b.get(key)!r}" for key in sorted(set(a) | set(b))
            if (a.get(key) != b.get(key) if key in a else key not in defaults or b[key] != defaults[key])]


def _schema_defaults() -> dict[str, Any]:
    return _flat(as_json(OmegaConf.to_container(OmegaConf.structured(RunConfig), resolve=True)))


def same_recipe(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True when a run saved with fingerprint `old` learned what `new` describes."""
    return not differences(old, new)


def saved_fingerprint(config_file: str | os.PathLike[str]) -> dict[str, Any]:
    """The fingerprint of a run folder's saved config.yaml, one error line if it is unreadable."""
    import yaml
    from omegaconf.errors import OmegaConfBaseException


    try:
        config = OmegaConf.load(config_file)
    except (OSError, yaml.YAMLError, OmegaConfBaseException) as err:
        raise IgoasError(f"{config_file}: not a readable run config ({' '.join(str(err).split())})") from None
    if not isinstance(config, DictConfig):
        raise IgoasError(f"{config_file}: not a run config (no data/model/train sections)")
    return fingerprint(config)
