"""The optional extras of pyproject.toml's [project.optional-dependencies], by the module they bring.

A command that needs an optional library imports it where it is used; when it is missing,
the user is told the one `pip install 'igoas[EXTRA]'` that fixes it instead of a traceback.
"""
from __future__ import annotations

import importlib

from igoas.errors import IgoasError

# Top-level import name -> the extra that installs it (tests/test_cli.py checks it against pyproject.toml).
EXTRA_OF_MODULE: dict[str, str] = {
    "tensorboard": "tensorboard",
    "matplotlib": "viz",
    "faiss": "search",
    "onnx": "export", "onnxruntime": "export", "onnxscript": "export",
    "safetensors": "safetensors",
    "openvino": "openvino",
    "fastapi": "serve", "uvicorn": "serve", "multipart": "serve", "jinja2": "serve",
    "imagecorruptions": "corruptions", "skimage": "corruptions", "scipy": "corruptions",
}


def missing_module_message(err: ImportError, needed_by: str = "this command") -> str | None:
    """One line naming the missing module and the extra that installs it; None for an import
    error that is no missing library (igoas's own modules, a name an unlisted library lacks)."""
    module = (err.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    if extra is not None:
        return f"{needed_by} needs the optional package {module!r}, which cannot be imported ({err}); " \
               f"install the {extra} extra: pip install 'igoas[{extra}]'"
    if isinstance(err, ModuleNotFoundError) and module and module != "igoas":
        return f"{needed_by} needs the Python module {module!r}, which is not installed ({err}); install it, " \
               "or igoas with all its extras: pip install 'igoas[all]'"
    return None


def require(module: str, needed_by: str) -> None:
    """Fail now, before a long computation whose results `needed_by` would then lose, when
    `module` cannot be imported."""
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise IgoasError(missing_module_message(err, needed_by) or f"{needed_by}: {err}") from None
