"""The optional extras of pyproject.toml's [project.optional-dependencies], by the module they bring.

Code that needs an optional library imports it with `optional(name, needed_by)` where it is
used, the one place igoas imports an optional library; when it is missing, the user is told
the one `pip install 'igoas[EXTRA]'` that fixes it instead of a traceback.
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from igoas.utils.errors import IgoasError

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
    error that is no missing library (igoas's own modules, a submodule or name that an
    installed library lacks), which then surfaces as the bug it is."""
    module = (err.name or "").split(".")[0]
    if not module or module == "igoas":
        return None
    installed = _installed(module)
    extra = EXTRA_OF_MODULE.get(module)
    if extra is not None and installed:
        return f"{needed_by} needs the optional package {module!r}, which is installed but fails to import " \
               f"({err}); it may be too old: pip install -U 'igoas[{extra}]'"
    if extra is not None:
        return f"{needed_by} needs the optional package {module!r}, which cannot be imported ({err}); " \
               f"install the {extra} extra: pip install 'igoas[{extra}]'"
    if isinstance(err, ModuleNotFoundError) and not installed:
        return f"{needed_by} needs the Python module {module!r}, which is not installed ({err}); install it, " \
               "or igoas with all its extras: pip install 'igoas[all]'"
    return None


def _installed(module: str) -> bool:
    """Whether a top-level module can be found (a module set to None in sys.modules cannot)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return True


class MissingExtraError(IgoasError, ImportError):
    """An optional library cannot be imported; the message names the extra that installs it.
    It is an ImportError too, so code that falls back without the library keeps doing so."""


def optional(module: str, needed_by: str = "this command") -> ModuleType:
    """Import the optional library `module` (or one of its submodules) for `needed_by`."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(missing_module_message(err, needed_by) or f"{needed_by}: {err}") from None


def require(module: str, needed_by: str) -> None:
    """Fail now, before a long computation whose results `needed_by` would then lose, when
    `module` cannot be imported."""
    optional(module, needed_by)
