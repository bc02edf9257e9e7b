"""One checkpoint format for training, import, inference and export.

Checkpoints hold only plain types and tensors so that `torch.load(weights_only=True)`
reads them: nothing in a checkpoint can execute code when it is loaded. Writes go to a
temporary file in the same folder, are flushed to disk and then renamed over the target,
so an interrupted write never leaves a half-written checkpoint behind. The keys are
listed in docs/ARCHITECTURE.md; `checkpoint_payload` builds the entries every
checkpoint shares, whoever writes it (training, import of the authors' weights, tests).
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from igoas.artifacts.digest import DIGEST_KEY, payload_digest
from igoas.imaging.preprocess import Preprocess
from igoas.model import build_model
from igoas.utils.errors import CheckpointError
from igoas.utils.fileio import atomic_write

FORMAT_NAME = "igoas"
FORMAT_VERSION = 1
# Far more identities than any ReID dataset has; a larger `num_classes` is a damaged spec
# (building it would try to allocate terabytes).
MAX_CLASSES = 1_000_000

PathLike = str | os.PathLike[str]


def save_checkpoint(path: PathLike, payload: Mapping[str, Any]) -> Path:
    """Write `payload` (plain types and tensors only) atomically to `path`."""
    payload = dict(payload)
    payload.setdefault("format", FORMAT_NAME)
    payload.setdefault("format_version", FORMAT_VERSION)
    payload[DIGEST_KEY] = payload_digest(payload)
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def checkpoint_payload(model: torch.nn.Module, preprocess: Preprocess | Mapping[str, Any], *, config: Mapping[str, Any] | None = None,
                       epoch: int | None = 0, iteration: int | None = 0, metrics: Mapping[str, Any] | None = None,
                       source: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The entries every checkpoint holds: the network (`model_spec`, `model`), its input
    recipe (a `Preprocess` or its dict), the run config, progress, metrics and provenance;
    `extra` adds the writer's own entries (training state, `best`, ...)."""

    return {
        "model_spec": model.spec,
        "model": model.state_dict(),
        "preprocess": Preprocess.resolve(preprocess).to_dict(),
        "config": None if config is None else dict(config),
        "epoch": epoch,
        "iteration": iteration,
        "metrics": dict(metrics or {}),
        "source": None if source is None else dict(source),
        **extra,
    }


def read_torch_file(path: PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Read any torch-saved file safely, turning every failure into a CheckpointError that names it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); it was probably cut off while being written")
    kind = _not_a_torch_file(path)
    if kind:
        raise CheckpointError(f"{path}: not a checkpoint: it is {kind}. Give a .pth file written by `igoas train` "
                              "or `igoas import-official`.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if not _refused_as_unsafe(err):
            reason = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
            raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({reason}); the file "
                                  "is truncated or corrupt, or not a checkpoint. Re-copy or re-download it.") from None
        raise CheckpointError(
            f"{path}: refused to load: the file needs arbitrary pickled Python objects, which could run code "
            f"when loaded ({_refused_global(err)}). Only checkpoints made of tensors and plain types are accepted. "
            "If you trust the file, re-save just its tensors, e.g. in Python: "
            "torch.save({'state_dict': torch.load(path, weights_only=False)['state_dict']}, 'clean.pth')"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch checkpoint ({_first_line(err)}); the file is truncated or "
            "corrupt, or not a checkpoint. Re-copy or re-download it."
        ) from None


def load_checkpoint(path: PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load an igoas checkpoint safely and check that it is one."""
    payload = read_torch_file(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path}: not an igoas checkpoint (no 'format': 'igoas' entry). "
            "A checkpoint trained with the authors' torchreid code is converted with "
            "`igoas import-official FILE --out OUT.pth`."
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is newer than this igoas understands "
            f"({FORMAT_VERSION}); upgrade igoas."
        )
    for key in ("model_spec", "model"):
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint lacks its '{key}' entry; the file is incomplete.")
    check_digest(payload, str(path))
    check_model_entries(payload, str(path))
    return payload


def check_digest(payload: Mapping[str, Any], source: str) -> None:
    """Refuse a checkpoint whose content no longer matches the digest written with it.
    Checkpoints written before the digest existed carry none and are read as they are."""
    stored = payload.get(DIGEST_KEY)
    if stored is None:
        return
    if stored != payload_digest(payload):
        raise CheckpointError(f"{source}: the checkpoint's content does not match the SHA-256 stored in it "
                              "when it was written: the file was damaged after saving (a bad copy or a failing "
                              "disk). Re-copy it from its source, or use another checkpoint (e.g. last.pth).")


def check_model_entries(payload: Mapping[str, Any], source: str) -> None:
    """Refuse a payload whose network description or weights cannot be right, before any
    network is built from it (an absurd `num_classes` would try to allocate terabytes)."""
    spec, state = payload.get("model_spec"), payload.get("model")
    if not isinstance(spec, Mapping):
        raise CheckpointError(f"{source}: its 'model_spec' entry is a {type(spec).__name__}, not a mapping of "
                              "build_model arguments; the file is damaged")
    check_state_dict(state, source)
    classes = spec.get("num_classes")
    if not isinstance(classes, int) or isinstance(classes, bool) or not 1 <= classes <= MAX_CLASSES:
        raise CheckpointError(f"{source}: model_spec.num_classes={classes!r} is not a number of identities "
                              f"between 1 and {MAX_CLASSES:,}; the file is damaged")


def check_state_dict(state: object, source: str) -> None:
    """A state dict must map names to tensors, all of them finite: NaN or Inf weights or
    BatchNorm statistics (a diverged run) would give NaN embeddings and meaningless scores."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: the weights are a {type(state).__name__}, not a mapping of tensor names "
                              "to tensors; the file is damaged or not a model checkpoint")
    odd = [str(key) for key, value in state.items() if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if odd:
        raise CheckpointError(f"{source}: {len(odd)} weight entr(y/ies) are not named tensors ({_preview(odd)}); "
                              "the file is damaged")
    bad = [key for key, value in state.items() if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        raise CheckpointError(f"{source}: {len(bad)} weight/buffer tensor(s) hold NaN or Inf ({_preview(bad)}); "
                              "the run had diverged when this was saved. Use an earlier checkpoint or retrain with "
                              "a lower optim.lr.")
    negative = [key for key, value in state.items() if key.endswith("running_var") and bool((value < 0).any())]
    if negative:
        raise CheckpointError(f"{source}: {len(negative)} BatchNorm running variance(s) below 0 ({_preview(negative)}), "
                              "which no training produces and which would make every embedding NaN; the file is "
                              "damaged or was edited: use another checkpoint")


def load_model_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a state dict strictly, naming every missing, unexpected, mis-shaped or non-finite tensor."""
    check_state_dict(state, source)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
        for key in sorted(set(own) & set(state))
        if tuple(state[key].shape) != tuple(own[key].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {_preview(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_preview(mismatched)}")
    if problems:
        raise CheckpointError(f"{source}: weights do not match the model: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def model_from_checkpoint(
    checkpoint: PathLike | Mapping[str, Any], map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the network a checkpoint describes and load its weights (in eval mode)."""

    if isinstance(checkpoint, Mapping):
        payload, source = dict(checkpoint), "checkpoint"
        check_model_entries(payload, source)
    else:
        payload, source = load_checkpoint(checkpoint, map_location), str(checkpoint)
    spec = dict(payload["model_spec"])
    options = dict(spec.pop("options", {}) or {})
    spec.pop("pretrained", None)
    model = build_model(**spec, pretrained=False, **options)
    load_model_state(model, payload["model"], source)
    model.eval()
    return model, payload


def _preview(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


def _not_a_torch_file(path: Path) -> str:
    """What the file is when it cannot be a torch file (a zip archive or a pickle), else ""."""
    with open(path, "rb") as handle:
        head = handle.read(256)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return ""
    if path.suffix.lower() == ".onnx" or (head.startswith(b"\x08") and b"pytorch" in head):
        return "an ONNX model (`igoas export` output; run it with onnxruntime)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "neither a zip archive nor a pickle (random or damaged bytes)"
    if all(c.isprintable() or c.isspace() for c in text):
        first = text.strip().splitlines()[0][:40] if text.strip() else ""
        return f"a text file (it begins {first!r})"
    return "neither a zip archive nor a pickle (random or damaged bytes)"


def _refused_as_unsafe(err: BaseException) -> bool:
    """Whether torch refused the file for needing objects beyond tensors and plain types."""
    return "Unsupported global" in str(err) or "GLOBAL " in str(err)


def _refused_global(err: BaseException) -> str:
    """Name the object torch refused (its message is long and multi-line) or fall back to its first line."""
    match = re.search(r"GLOBAL (\S+)", str(err))
    return f"it contains {match.group(1)}" if match else _first_line(err)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
