"""igoas: the IGOAS network for occluded person re-identification, and the toolbox around it.

The public names below are imported lazily so that `import igoas` stays light and
optional dependencies load only when the feature that needs them is used.
"""
from __future__ import annotations

import importlib
from typing import Any

from igoas.utils.version import __version__

_EXPORTS = {
    "build_model": "igoas.model",
    "build_occlusion": "igoas.model.occlusion",
    "build_dataset": "igoas.data",
    "render_synthetic": "igoas.data",
    "evaluate_rank": "igoas.evaluation",
    "evaluate_features": "igoas.evaluation",
    "k_reciprocal_rerank": "igoas.evaluation",
    "ReIDModel": "igoas.deploy.inference",
    "import_official": "igoas.interop.official",
    "export_official": "igoas.interop.official",
    "load_checkpoint": "igoas.artifacts.checkpoint",
    "save_checkpoint": "igoas.artifacts.checkpoint",
    "Preprocess": "igoas.imaging.preprocess",
    "RunDir": "igoas.artifacts.run_dir",
    "train": "igoas.training.trainer",
    "load_config": "igoas.config",
    "occlusion_stress_test": "igoas.robustness.occlusion_stress",
    "write_html_report": "igoas.viz",
    "run_ablation": "igoas.studies.ablation",
    "run_demo": "igoas.studies.demo",
    "embed": "igoas.evaluation.embedding",
    "Runtime": "igoas.compute.runtime",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'igoas' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    """The public API (lazy names included) and the module's dunders, so `dir(igoas)` and
    tab completion show what to use, not the helpers this file imports."""
    return sorted(set(__all__) | {name for name in globals() if name.startswith("__")})
