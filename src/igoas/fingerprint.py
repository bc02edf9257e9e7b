"""Config fingerprints: what a run learns, without where or how visibly it runs.

Two configs with equal fingerprints train the same model, so a finished run (a study arm,
a pretrained trunk) can be reused instead of trained again, and a folder trained with
another recipe can be named with its differences instead of being silently mixed in.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from omegaconf import DictConfig

from igoas.config import to_dict

# Keys that change where or how visibly a run executes, not what it learns: a study moved
# to another folder or re-run with more workers still counts as the same study (eval.fprs
# only adds TPR columns, which the study does not report).
RUNTIME_KEYS = ("data.root", "data.num_workers", "data.on_error", "eval.num_workers", "eval.fprs", "train.output_dir",
                "train.device", "train.log_every", "train.tensorboard", "train.progress_bar")


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
    """`key: old -> new` for every dotted key whose value differs.

    A key the old config lacks is an option added to igoas since it was saved, whose
    default keeps the earlier behaviour: not a difference, so records and runs made before
    an option existed stay valid.
    """
    a, b = _flat(old), _flat(new)
    return [f"{key}: {a.get(key)!r} -> {b.get(key)!r}" for key in sorted(set(a) | set(b))
            if key in a and a.get(key) != b.get(key)]


def same_recipe(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True when a run saved with fingerprint `old` learned what `new` describes."""
    return not differences(old, new)
