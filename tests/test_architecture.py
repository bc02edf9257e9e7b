"""The layer rules of docs/ARCHITECTURE.md, checked on the source: every `import igoas...`
(module-level or inside a function) is parsed with `ast`, so a rule cannot rot silently."""
from __future__ import annotations

import ast
from pathlib import Path

import igoas

SOURCE = Path(igoas.__file__).parent

# The lower layers name everything they may import (besides themselves); a prefix allows
# that module and its submodules.
ALLOWED: dict[str, tuple[str, ...]] = {
    "errors": (),
    "fileio": ("errors",),
    "config": ("errors", "artifacts.preprocess"),
    "artifacts": ("errors", "fileio", "model"),  # model: rebuild the network a checkpoint describes
    "evaluation": ("errors", "progress"),
    "retrieval": ("errors", "fileio"),
    "speed": ("errors", "config"),
    "occlusion": ("errors", "artifacts.preprocess"),
    "model": ("errors", "config", "occlusion"),
    "losses": ("errors", "config", "model"),
    "compat": (),
    "data": ("errors", "fileio", "compat", "artifacts", "corruptions.augment"),
    "interop": ("errors", "fileio", "config", "artifacts", "model"),
}
# The upper layers name what they must not import.
TOOLS = ("inference", "extraction", "export", "robustness", "occluder_painting", "corruptions", "ablation", "demo",
         "pretrain", "reproduce", "serve")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "engine": TOOLS + ("viz",),
    "viz": ("engine",),
}
ENTRY_POINTS = ("cli", "__main__", "commands")
# Kept only so that code outside igoas keeps importing the old paths; igoas itself uses igoas.artifacts.
ALIASES = ("preprocess", "engine.checkpoint")


def _imports(path: Path) -> list[str]:
    """Every igoas module `path` imports, relative to the package (`igoas.data.base` -> `data.base`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [name.removeprefix("igoas").removeprefix(".") for name in names
                  if name == "igoas" or name.startswith("igoas.")]
    return found


def _layer(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return parts[0] if parts[0] != "__init__" else "igoas"


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _violations() -> list[str]:
    problems = []
    for path in sorted(SOURCE.rglob("*.py")):
        layer, where = _layer(path), path.relative_to(SOURCE.parent)
        for module in _imports(path):
            target = module.split(".")[0] if module else "igoas"
            if target == layer:
                continue
            if layer in ALLOWED and not any(_within(module, allowed) for allowed in ALLOWED[layer]):
                problems.append(f"{where}: {layer}/ may not import igoas.{module}")
            if any(_within(module, banned) for banned in FORBIDDEN.get(layer, ())):
                problems.append(f"{where}: {layer}/ may not import igoas.{module}")
            if module in ALIASES:
                problems.append(f"{where}: import igoas.artifacts, not the alias igoas.{module}")
            if target in ENTRY_POINTS and layer not in ENTRY_POINTS:
                problems.append(f"{where}: library code may not import the command line (igoas.{module})")
        if layer == "commands":
            own = path.stem
            for module in _imports(path):
                if module.startswith("commands.") and module not in ("commands.arguments", f"commands.{own}"):
                    problems.append(f"{where}: a command may not import another command (igoas.{module})")
    return problems


def test_imports_follow_the_layer_rules() -> None:
    assert _violations() == []


def test_the_checker_sees_lazy_imports(tmp_path: Path) -> None:
    module = tmp_path / "sample.py"
    module.write_text("import os\nfrom igoas.engine import trainer\n\ndef f():\n    import igoas.data.base\n")
    assert _imports(module) == ["engine", "data.base"]
