"""Synthetic pretraining (`igoas pretrain`): a pretrained trunk where no ImageNet weights exist.

The paper fine-tunes an ImageNet-pretrained ResNet after a few "fixbase" epochs; here no
weights can be downloaded, so the stand-in is the baseline network trained with the
identity loss on a separate, larger synthetic population (the `synthetic_pretrain` preset:
1,020 training identities from seed 1000, mostly unoccluded). Its trunk is saved as a
plain torchvision ResNet state dict, `<out>/trunk.pth`, which `model.pretrained=<path>`
loads into any preset with the same backbone.

Deterministic (the preset sets `train.deterministic`) and cached: `<out>/pretrain.json`
records the config the trunk was trained with; calling again with the same config returns
the saved trunk, an interrupted run continues from its last checkpoint, and a folder
trained with another config is refused with its differences.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from igoas.artifacts.checkpoint import model_from_checkpoint
from igoas.artifacts.run_dir import RunDir
from igoas.config import apply_overrides, load_config, to_dict, validate
from igoas.data import build_dataset
from igoas.data.synthetic import read_meta
from igoas.data.synthetic.writer import sample_identities
from igoas.model.pretrained import trunk_from_network_state
from igoas.studies.fingerprint import differences, fingerprint, same_recipe, saved_fingerprint
from igoas.training.trainer import train
from igoas.utils.errors import ConfigError, DatasetError, IgoasError
from igoas.utils.fileio import atomic_write, write_json

PRESET = "synthetic_pretrain"
TRUNK_FILE = "trunk.pth"
RECORD_FILE = "pretrain.json"
RUN_FOLDER = "run"
DEFAULT_OUT = "runs/pretrain/synthetic_pretrain"
# The seed-0 population every other synthetic preset renders; its first identities are
# those of every size (identities are drawn as one stream), so checking the largest
# size's count covers them all.
STUDY_SEED, STUDY_IDENTITIES = 0, 720

@dataclass
class PretrainResult:
    """The trunk file to pass as `model.pretrained`, its run, and the held-out scores (percent)."""

    trunk: Path
    run_dir: Path
    reused: bool
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float | None = None


def trunk_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The stem, stages 1-3 and the global stage 4 of an igoas network, under torchvision's ResNet names."""

    state = {key: value.detach().clone().cpu() for key, value in trunk_from_network_state(model.state_dict()).items()}
    if not any(key.startswith("layer4.") for key in state):
        raise IgoasError("the network has no stem/stage layers to export as a trunk")
    return state


def check_disjoint_identities(root: Path, seed: int = STUDY_SEED, count: int = STUDY_IDENTITIES) -> None:
    """Refuse a pretraining population sharing an identity (same appearance attributes)
    with the seed-`seed` synthetic sets the study and the demo evaluate on."""

    meta = read_meta(root)
    if meta is None:
        raise DatasetError(f"{root}: no synthetic meta.json to check the pretraining identities against")
    if int(meta["params"]["seed"]) == seed:
        raise ConfigError(f"the pretraining population {root} uses seed {seed}, the seed of the evaluated sets; "
                          "give data.options.seed another value")
    ours = {tuple(sorted(labels.items())) for labels in meta["identities"].values()}
    theirs = {ident.key() for ident in sample_identities(count, np.random.default_rng([seed, 1])).values()}
    shared = ours & theirs
    if shared:
        raise ConfigError(f"{len(shared)} pretraining identities in {root} look exactly like identities of the "
                          f"seed-{seed} sets; choose another data.options.seed")


def _save_trunk(checkpoint: Path, out: Path) -> Path:
    model, _ = model_from_checkpoint(checkpoint)
    state = trunk_state_dict(model)
    return atomic_write(out / TRUNK_FILE, lambda handle: torch.save(state, handle))


def pretrain(out_dir: str | os.PathLike[str] = DEFAULT_OUT, overrides: Iterable[str] = (),
             preset: str | os.PathLike[str] = PRESET, log: Callable[[str], None] | None = print) -> PretrainResult:
    """Train (or reuse) the synthetic-pretrained trunk in `out_dir`; returns where it is.

    `overrides` (dotted `key=value`) apply to the preset, e.g. `model.backbone=resnet50`
    for a ResNet-50 trunk or `train.epochs=1` for a quick check; the population is rendered
    into `<out_dir>/data` unless they set `data.root`.
    """

    log = log or (lambda message: None)
    out = Path(out_dir).expanduser().absolute()
    run_dir = out / RUN_FOLDER
    # The paths are set on the config, not as overrides, so YAML never reads them ("#", "yes", ": ");
    # the population's default folder comes before the overrides (which may name another).
    cfg = load_config(preset)
    cfg.data.root = str(out / "data")
    cfg = apply_overrides(cfg, overrides)
    cfg.train.output_dir = str(run_dir)
    validate(cfg)
    wanted = fingerprint(cfg)
    record = _read_record(out)
    saved_config = record.get("config") if record is not None else None
    if isinstance(saved_config, dict) and saved_config and same_recipe(saved_config, wanted) \
            and (out / TRUNK_FILE).is_file():
        log(f"pretrained trunk {out / TRUNK_FILE} is up to date, reusing it")
        return PretrainResult(out / TRUNK_FILE, run_dir, True, record.get("metrics", {}), record.get("seconds"))
    saved = RunDir(run_dir).config
    if saved.is_file():
        changes = differences(saved_fingerprint(saved), wanted)
        if changes:
            raise ConfigError(f"{run_dir} was pretrained with another config ({'; '.join(changes[:5])}); "
                              "delete that folder or give another --out")
    started = time.perf_counter()
    if cfg.data.dataset == "synthetic":
        build_dataset(cfg.data.dataset, cfg.data.root, **to_dict(cfg.data.options))  # render (cached)
        check_disjoint_identities(Path(cfg.data.root))
    resume = run_dir if RunDir(run_dir).last_checkpoint.is_file() else None
    log(f"{'continuing' if resume else 'starting'} synthetic pretraining in {run_dir}")
    result = train(cfg, resume=resume, overwrite=resume is None)  # a run killed before its first checkpoint
    if not result.finished:
        raise IgoasError(f"pretraining stopped at iteration {result.iteration}; run the same command again to "
                         "continue it")
    trunk = _save_trunk(RunDir(run_dir).last_checkpoint, out)
    seconds = time.perf_counter() - started
    write_json(out / RECORD_FILE, {"config": wanted, "metrics": result.metrics, "seconds": seconds,
                                   "trunk": str(trunk), "backbone": cfg.model.backbone})
    log(f"pretrained trunk: {trunk} (use it as model.pretrained={trunk})")
    return PretrainResult(trunk, run_dir, False, result.metrics, seconds)


def _read_record(out: Path) -> dict[str, Any] | None:
    import json

    try:
        record = json.loads((out / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
