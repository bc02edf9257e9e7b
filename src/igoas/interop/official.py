"""Checkpoints of the authors' IGOAS code (a torchreid fork) in and out of igoas.

The authors' network (class `ResNet` in `torchreid/models/bfe.py`, Vill-Lab/2021-TIP-IGOAS
at commit c5d4b3f) has exactly the layers of the igoas `igoas` model under other module
names, and both sides build their blocks from torchvision, so a tensor keeps everything
after its module prefix. `KEY_CORRESPONDENCE` is that renaming, as data.

Unlike torchreid's `load_pretrained_weights`, which silently skips whatever does not
match, the mapping here is strict in both directions: every tensor of the source goes to
exactly one tensor of the target, every target tensor is filled (BatchNorm running
statistics and counters included), and any missing, unexpected or mis-shaped tensor is
an error naming the key on both sides and both shapes. Files are validated completely
before anything is written, and written atomically.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from igoas.artifacts.checkpoint import (check_state_dict, checkpoint_payload, load_checkpoint, read_torch_file,
                                        save_checkpoint)
from igoas.imaging.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from igoas.model import build_model
from igoas.utils.errors import CheckpointError, IgoasError
from igoas.utils.fileio import atomic_write

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

OFFICIAL_FORMAT = "torchreid"

# The authors' module -> the igoas module holding the same tensors (suffixes unchanged).
KEY_CORRESPONDENCE: dict[str, str] = {
    "layer0": "stem",  # Sequential(conv1, bn1, relu, maxpool)
    "layer1": "layer1",
    "layer2": "layer2",
    "layer3": "layer3",  # stages 1-3, shared by both branches
    # Each stage-4 copy sits inside one more Sequential there, hence the extra `.0`.
    "layer41.0": "global_stage4",
    "layer42.0": "suppression_stage4",
    "res_part1": "global_bottleneck",
    "res_part2": "suppression_bottleneck",
    "att1": "suppression_cbam",  # CBAM(1024) on the stage-3 map, before the suppression stage 4
    "att_module2": "osm.cbam",  # CBAM(2048) after res_part2: the OSM attention X'
    "reduction1": "global_reduction",  # .0 Linear 2048->512, .1 BatchNorm1d
    "reduction2": "suppression_reduction",
    "classifier1": "global_classifier",  # on the global 512-d feature
    "classifier2": "suppression_classifier",  # on the suppression 512-d feature
    "classifier3": "concat_classifier",  # on both, concatenated (1024-d)
}

# Modules of other versions of the authors' network that no forward pass uses: dropped on import.
DROPPED_MODULES: dict[str, str] = {
    "classifier4": "an unused 512 -> identities classifier built by the earlier f3b800b version of bfe.py",
}

# `build_model` arguments that rebuild the authors' network. The options are spelled out
# rather than left to defaults, so an import stays faithful whatever the defaults become.
OFFICIAL_MODEL_NAME = "igoas"
OFFICIAL_BACKBONE = "resnet50"
OFFICIAL_OPTIONS: dict[str, Any] = {
    "extra_bottleneck": True,
    "pre_stage4_cbam": True,
    "cbam_spatial_kernel": 3,
    "cbam_reduction": 16,
    "global_pooling": "avg",
    "suppression_pooling": "max",
    "reduction_dim": 512,
}
# igoas models with the authors' layers (igoas_no_osm differs only in its training loss).
EXPORTABLE_MODELS = ("igoas", "igoas_no_osm")

# The published recipe evaluates 384x128 images resized bilinearly (configs/bfe.yaml).
OFFICIAL_INPUT_SIZE = (384, 128)
OFFICIAL_INTERPOLATION = "bilinear"

_DATA_PARALLEL_PREFIX = "module."
_IGOAS_TO_OFFICIAL = {igoas: official for official, igoas in KEY_CORRESPONDENCE.items()}


# ---------------------------------------------------------------------------- key mapping
def _rename(key: str, table: Mapping[str, str]) -> str | None:
    for prefix, replacement in table.items():
        if key.startswith(prefix + "."):
            return replacement + key[len(prefix):]
    return None


def official_to_igoas_key(key: str) -> str | None:
    """The igoas name of one of the authors' tensor names (None when it has no counterpart)."""
    return _rename(key, KEY_CORRESPONDENCE)


def igoas_to_official_key(key: str) -> str | None:
    """The authors' name of one igoas tensor name (None when it has no counterpart)."""
    return _rename(key, _IGOAS_TO_OFFICIAL)


def _mismatches(
    state: Mapping[str, Tensor], expected: Mapping[str, Tensor], name: Callable[[str], str], sides: tuple[str, str]
) -> list[str]:
    """Every difference between `state` and `expected` (both igoas names), each shown as `name(key)`."""
    have, want = sides
    problems = []
    missing = [key for key in expected if key not in state]
    if missing:
        problems.append(f"missing {len(missing)} tensor(s) in the {have}: " + _preview(
            f"{name(key)} {tuple(expected[key].shape)}" for key in missing))
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) that the {want} does not have: " + _preview(
            f"{name(key)} {tuple(state[key].shape)}" for key in unexpected))
    wrong = [key for key in state if key in expected and tuple(state[key].shape) != tuple(expected[key].shape)]
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch(es): " + _preview(
            f"{name(key)}: {have} {tuple(state[key].shape)} vs {want} {tuple(expected[key].shape)}" for key in wrong))
    return problems


def _official_name(igoas_key: str) -> str:
    official = igoas_to_official_key(igoas_key)
    return f"{official} (igoas {igoas_key})" if official else f"igoas {igoas_key} (no authors' counterpart)"


def _igoas_name(igoas_key: str) -> str:
    return f"{igoas_key} (authors' {igoas_to_official_key(igoas_key) or 'none'})"


def official_to_igoas_state(
    state: Mapping[str, Tensor], expected: Mapping[str, Tensor], source: str = "checkpoint"
) -> dict[str, Tensor]:
    """Rename the authors' state dict to igoas names, checking it against `expected` (an igoas state dict).

    Raises CheckpointError listing every tensor without a counterpart, every igoas tensor
    left unfilled and every shape mismatch, each with both names and both shapes.
    """
    renamed: dict[str, Tensor] = {}
    unmapped = []
    for key, value in state.items():
        target = official_to_igoas_key(key)
        if target is None:
            unmapped.append(f"{key} {tuple(value.shape)}")
        else:
            renamed[target] = value
    problems = _mismatches(renamed, expected, _official_name, ("checkpoint", "igoas network"))
    if unmapped:
        problems.insert(0, f"{len(unmapped)} tensor(s) with no igoas counterpart: " + _preview(unmapped))
    if problems:
        raise CheckpointError(
            f"{source}: does not match the authors' IGOAS network (bfe.py at c5d4b3f): " + "; ".join(problems)
            + ". Nothing was written; docs/official_checkpoints.md lists the expected tensors."
        )
    return renamed


# ---------------------------------------------------------------------------- reading their files
def _numpy_scalar_globals() -> list[Any]:
    """What unpickling a numpy number needs, and nothing more.

    torchreid stores `rank1` as `cmc[0]`, a numpy.float32, which `weights_only=True`
    refuses by default. A numpy scalar is rebuilt from a dtype and raw bytes, so allowing
    the scalar constructor, `numpy.dtype` and the numeric dtype classes admits numbers
    only: object dtypes and arrays stay refused. Files written under numpy 1 name the
    constructor `numpy.core.multiarray.scalar`, under numpy 2 `numpy._core.multiarray.scalar`.
    """
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    numeric = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
               "float16", "float32", "float64")
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *(type(np.dtype(name)) for name in numeric),
    ]


def _plain_number(value: Any) -> int | float | None:
    """A Python, numpy or one-element tensor number as a Python number; anything else as None."""
    if not isinstance(value, (int, float)):
        try:
            value = value.item()
        except (AttributeError, ValueError, RuntimeError):
            return None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_official_checkpoint(path: PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The authors' state dict in a file (torchreid dict or bare state dict), with its record.

    Returns (state with `module.` removed and unused modules dropped, record with `file`,
    `format`, `epoch`, `rank1`, `module_prefix`, `dropped_keys`).
    """
    path = Path(path)
    with torch.serialization.safe_globals(_numpy_scalar_globals()):
        content = read_torch_file(path)
    state, extras = _unwrap(content, path)
    state, had_prefix = _strip_data_parallel_prefix(state, path)
    state, dropped = _drop_unused(state)
    record = {
        "file": str(path),
        "format": OFFICIAL_FORMAT,
        "epoch": _plain_number(extras.get("epoch")),
        "rank1": _plain_number(extras.get("rank1")),
        "module_prefix": had_prefix,
        "dropped_keys": dropped,
    }
    return state, record


def _unwrap(content: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    if isinstance(content, Mapping) and content.get("format") == "igoas":
        raise CheckpointError(f"{path}: this is already an igoas checkpoint; use it directly, no import needed")
    if isinstance(content, Mapping) and "state_dict" in content:
        state, extras = content["state_dict"], dict(content)
    elif isinstance(content, Mapping) and content and all(isinstance(v, Tensor) for v in content.values()):
        state, extras = content, {}
    else:
        found = sorted(map(str, content))[:8] if isinstance(content, Mapping) else type(content).__name__
        raise CheckpointError(
            f"{path}: holds no state dict (found {found}); expected torchreid's checkpoint dict with a "
            "'state_dict' entry, as saved by the authors' training script, or a bare state dict of tensors"
        )
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: its 'state_dict' entry is a {type(state).__name__}, not a dict of tensors")
    not_tensors = [str(key) for key, value in state.items() if not isinstance(value, Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: state dict entries that are not tensors: {_preview(not_tensors)}")
    return dict(state), extras


def _strip_data_parallel_prefix(state: dict[str, Tensor], path: Path) -> tuple[dict[str, Tensor], bool]:
    """Remove the `module.` that DataParallel/DistributedDataParallel put before every key."""
    if not any(key.startswith(_DATA_PARALLEL_PREFIX) for key in state):
        return state, False
    stripped: dict[str, Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix(_DATA_PARALLEL_PREFIX)
        if name in stripped:
            raise CheckpointError(f"{path}: holds both {name} and module.{name}; cannot tell which one to use")
        stripped[name] = value
    return stripped, True


def _drop_unused(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    dropped = [key for key in state if key.split(".", 1)[0] in DROPPED_MODULES]
    for module in sorted({key.split(".", 1)[0] for key in dropped}):
        logger.warning("dropping %s: %s", ", ".join(k for k in dropped if k.startswith(module + ".")),
                       DROPPED_MODULES[module])
    return {key: value for key, value in state.items() if key not in dropped}, dropped


# ---------------------------------------------------------------------------- import / export
def official_network(num_classes: int) -> nn.Module:
    """An igoas network with the authors' architecture (random weights, no download)."""

    return build_model(OFFICIAL_MODEL_NAME, num_classes=num_classes, pretrained=False,
                       backbone=OFFICIAL_BACKBONE, **OFFICIAL_OPTIONS)


def _num_identities(state: Mapping[str, Tensor], path: Path) -> int:
    weight = state.get("classifier1.weight")
    if weight is None or weight.dim() != 2:
        sample = _preview(sorted(state)[:5])
        raise CheckpointError(
            f"{path}: no 2-d 'classifier1.weight' tensor (keys start with {sample}), so this is not a checkpoint "
            "of the authors' IGOAS network (torchreid model 'bfe'); the number of identities cannot be read"
        )
    return int(weight.shape[0])


def official_preprocess() -> dict[str, Any]:
    """The evaluation input of the published recipe: 384x128, ImageNet mean/std, bilinear resize."""
    return Preprocess(*OFFICIAL_INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD, OFFICIAL_INTERPOLATION).to_dict()


def import_official(path: PathLike, *, out: PathLike | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint trained with the authors' code into an igoas network.

    Accepts torchreid's checkpoint dict (`state_dict`, `epoch`, `rank1`, `optimizer`,
    `scheduler`) or a bare state dict, keys with or without `module.`. The number of
    identities is read from the classifier. Returns the network in eval mode and the igoas
    checkpoint payload, which is also written to `out` when given (only after every
    tensor has been checked).
    """
    path = Path(path)
    state, record = read_official_checkpoint(path)
    num_classes = _num_identities(state, path)
    expected = _reference_state(num_classes)
    renamed = official_to_igoas_state(state, expected, str(path))
    model = official_network(num_classes)
    check_state_dict(renamed, str(path))  # NaN or Inf weights are refused here as on every load
    model.load_state_dict(renamed, strict=True)
    model.eval()
    payload = checkpoint_payload(model, official_preprocess(), epoch=record["epoch"], iteration=None, source=record,
                                 optimizer=None, scheduler=None, occlusion_state=None)
    if out is not None:
        _write(out, lambda: save_checkpoint(out, payload))
    return model, payload


def export_official(
    checkpoint_or_model: PathLike | Mapping[str, Any] | nn.Module,
    out: PathLike,
    *,
    epoch: int | None = None,
    rank1: float | None = None,
) -> Path:
    """Write an igoas IGOAS network in the authors' key layout, as torchreid saves checkpoints.

    The file is a dict `{state_dict, epoch, rank1, optimizer: None, scheduler: None}` with
    keys without `module.`, readable by torchreid's `load_checkpoint` and
    `load_pretrained_weights` (their `model.load_weights` option). `epoch` and `rank1`
    default to what the checkpoint records: the imported file's values, else the igoas
    epoch and the main query set's rank-1 (a fraction, as torchreid stores it).
    """
    if rank1 is not None and not 0.0 <= rank1 <= 1.0:
        raise IgoasError(f"rank1 {rank1} is not a fraction in [0, 1]; torchreid stores rank-1 as a fraction "
                         "(0.601 for 60.1 %)")
    state, spec, payload = _network_state(checkpoint_or_model)
    _check_exportable(spec)
    reference = _reference_state(int(spec["num_classes"]))
    problems = _mismatches(state, reference, _igoas_name, ("network", "authors' network"))
    if problems:
        raise CheckpointError("this network does not have the authors' layers, so their code could not load it: "
                              + "; ".join(problems) + ". Nothing was written.")
    source = payload.get("source") or {}
    content = {
        # Every key has a counterpart: the reference check above passed.
        "state_dict": {igoas_to_official_key(key): value.detach().cpu() for key, value in state.items()},
        "epoch": _first_known(epoch, payload.get("epoch"), 0),
        "rank1": _first_known(rank1, source.get("rank1"), _main_rank1(payload)),
        "optimizer": None,
        "scheduler": None,
    }
    return _write(out, lambda: atomic_write(out, lambda handle: torch.save(content, handle)))


def _network_state(
    checkpoint_or_model: PathLike | Mapping[str, Any] | nn.Module,
) -> tuple[Mapping[str, Tensor], dict[str, Any], Mapping[str, Any]]:
    """(state dict, model spec, checkpoint payload) of a network, a loaded payload or a checkpoint file."""
    if isinstance(checkpoint_or_model, nn.Module):
        return checkpoint_or_model.state_dict(), dict(getattr(checkpoint_or_model, "spec", None) or {}), {}
    payload = checkpoint_or_model
    if not isinstance(payload, Mapping):
        payload = load_checkpoint(payload)
    if "model" not in payload or "model_spec" not in payload:
        raise CheckpointError("the checkpoint payload lacks its 'model' or 'model_spec' entry; pass an igoas "
                              "checkpoint (a file path or the dict `load_checkpoint` returns) or a network")
    return payload["model"], dict(payload["model_spec"]), payload


def _check_exportable(spec: Mapping[str, Any]) -> None:
    if not spec:
        raise CheckpointError("the network has no `spec`; build it with igoas.build_model so its architecture is known")
    name, backbone = spec.get("name"), spec.get("backbone")
    if name not in EXPORTABLE_MODELS or backbone != OFFICIAL_BACKBONE:
        raise CheckpointError(
            f"only IGOAS networks ({' or '.join(EXPORTABLE_MODELS)}) on {OFFICIAL_BACKBONE} have a counterpart in "
            f"the authors' code; this one is {name!r} on {backbone!r}"
        )
    options = spec.get("options") or {}
    # Pooling leaves no trace in the tensors, so the architecture is checked on the spec too.
    different = [key for key in OFFICIAL_OPTIONS if key in options and options[key] != OFFICIAL_OPTIONS[key]]
    if different:
        built = ", ".join(f"{key}={options[key]!r}" for key in different)
        fixed = ", ".join(f"{key}={OFFICIAL_OPTIONS[key]!r}" for key in different)
        raise CheckpointError(f"the network was built with {built}, but the authors' network is fixed to {fixed}; "
                              "their code would compute other embeddings")


def _reference_state(num_classes: int) -> dict[str, Tensor]:
    """The authors' network's tensors in igoas names, shapes and dtypes only.

    Built on the meta device (no memory, no initialisation), so a file is checked in
    full before any real network is built.
    """
    with torch.device("meta"):
        return official_network(num_classes).state_dict()


def _main_rank1(payload: Mapping[str, Any]) -> float | None:
    """Rank-1 of the main query set of the last igoas evaluation, as a fraction (igoas logs percent)."""
    percent = ((payload.get("metrics") or {}).get("query") or {}).get("R1")
    return None if percent is None else float(percent) / 100.0


def _first_known(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _write(out: PathLike, write: Callable[[], Path]) -> Path:
    """Run `write` (an atomic write to `out`), turning file-system failures into one clear error."""
    out = Path(out)
    if out.is_dir():
        raise CheckpointError(f"{out} is a folder; give the path of the file to write")
    try:
        return write()
    except OSError as err:
        raise CheckpointError(f"cannot write {out} ({err.strerror or err}); check that its folder is writable") from None


def _preview(items: Iterable[str], limit: int = 6) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")
