"""What a result came from, written beside every number igoas reports.

An evaluation's mAP depends on the checkpoint, on settings such as flip averaging, query
expansion and re-ranking, on the data it ran on and on the software; a results file that
omits any of them cannot be compared with another one. These helpers give one shape for
that record in evaluation JSON, robustness.json, features files and reports.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig

from igoas.config import EvalConfig
from igoas.utils.version import __version__

# Every `eval.*` setting that changes a reported number (batch size and workers do not).
EVAL_SETTINGS = ("metric", "flip", "query_expansion", "query_expansion_alpha", "rerank", "k1", "k2", "lambda_value",
                 "precision", "max_rank", "fprs")


def sha256_of(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, as `sha256sum` prints it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_identity(checkpoint: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, str | None]:
    """{"path": absolute path, "sha256": hash of its bytes} of a checkpoint file; both None
    for a checkpoint given as an in-memory payload."""
    if not isinstance(checkpoint, (str, os.PathLike)) or not Path(checkpoint).is_file():
        return {"path": None, "sha256": None}
    return {"path": str(Path(checkpoint).resolve()), "sha256": sha256_of(checkpoint)}


def software_versions() -> dict[str, str]:
    """igoas, PyTorch and torchvision versions."""
    import torch
    import torchvision

    return {"igoas": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__}


def evaluation_settings(eval_config: EvalConfig | DictConfig) -> dict[str, Any]:
    """The `eval.*` settings behind a number (an EvalConfig or its DictConfig section)."""
    return {name: _plain(getattr(eval_config, name)) for name in EVAL_SETTINGS}


def dataset_records(cfg: DictConfig, datasets: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Name, root and reader options of each dataset a run config evaluates on, and with
    `datasets` (name -> the ReIDDataset evaluated) the protocol each reader used
    (`protocol_info`: e.g. Occluded-ReID's split, Partial-REID's query folder)."""
    data = cfg.data
    if not data.targets:
        records = [{"name": data.dataset, "root": str(data.root), "options": _plain(data.options)}]
    else:
        records = []
        for name in data.targets:
            options = dict(_plain(data.target_options).get(name) or {})
            records.append({"name": name, "root": str(options.pop("root", data.root)), "options": options})
    for record in records:
        if datasets and record["name"] in datasets:
            record["protocol"] = dict(datasets[record["name"]].protocol_info)
    return records


def evaluation_record(cfg: DictConfig, checkpoint: str | os.PathLike[str] | Mapping[str, Any],
                      preprocess: Mapping[str, Any] | None = None, datasets: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything an evaluation's numbers depend on: checkpoint (path and SHA-256), the
    datasets with their roots (and, given the datasets evaluated, their protocols), the
    input preprocessing, the `eval.*` settings, versions."""
    record: dict[str, Any] = {"checkpoint": checkpoint_identity(checkpoint), "datasets": dataset_records(cfg, datasets)}
    if preprocess is not None:
        record["preprocess"] = _plain(dict(preprocess))
    record["eval"] = evaluation_settings(cfg.eval)
    record["versions"] = software_versions()
    return record


def _plain(value: Any) -> Any:
    """OmegaConf containers as plain dicts and lists (JSON-ready)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value
