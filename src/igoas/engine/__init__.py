"""Training, evaluation of models on datasets, checkpoints and multi-process runs.

Submodules load on first use, so importing one piece (e.g. `igoas.engine.features`)
does not pull in the data pipeline or the trainer.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "train": "igoas.engine.trainer",
    "TrainResult": "igoas.engine.trainer",
    "TrainingDiverged": "igoas.engine.trainer",
    "Runtime": "igoas.engine.embedding",
    "embed": "igoas.engine.embedding",
    "embed_samples": "igoas.engine.features",
    "embed_dataset": "igoas.engine.features",
    "rank_query_sets": "igoas.engine.features",
    "evaluate_model": "igoas.engine.features",
    "evaluate_datasets": "igoas.engine.features",
    "evaluate_checkpoint": "igoas.engine.features",
    "save_checkpoint": "igoas.artifacts.checkpoint",
    "load_checkpoint": "igoas.artifacts.checkpoint",
    "model_from_checkpoint": "igoas.artifacts.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'igoas.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
