"""The layering of docs/ARCHITECTURE.md, checked on the source by scripts/import_graph.py: no
circles, no import up a floor or sideways between packages, and no own-module import hidden
inside a function, so a rule cannot rot silently."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_graph.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass-free, but keep the usual import contract
    spec.loader.exec_module(module)
    return module


import_graph = _load_script()


@pytest.fixture(scope="module")
def graph():
    return import_graph.Graph()


def test_the_package_has_no_circles(graph) -> None:
    assert graph.circles() == []


def test_no_import_runs_up_a_floor_or_sideways(graph) -> None:
    assert graph.upward() == []


def test_own_modules_are_imported_at_module_level(graph) -> None:
    assert graph.hidden() == []


def test_every_package_stands_on_a_floor(graph) -> None:
    for module in graph.modules:
        import_graph.floor_of(module)  # raises for a package missing from FLOORS


def test_the_top_of_the_package_holds_only_entry_points_and_the_config(graph) -> None:
    assert graph.top_level == ["__main__", "cli", "config"]


def test_a_command_does_not_import_another_command(graph) -> None:
    shared = {"commands", "commands.arguments"}
    crossings = [f"{module} -> {target}" for module, targets in graph.arrows.items() if module.startswith("commands.")
                 for target in targets if target.startswith("commands") and target not in shared]
    assert crossings == []


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "igoas" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "igoas"


def test_the_checker_finds_circles_upward_and_hidden_imports(tmp_path: Path) -> None:
    package = _write_package(tmp_path, {
        "__init__.py": "",
        "utils/__init__.py": "",
        "utils/a.py": "from igoas.utils import b\n",
        "utils/b.py": "def f():\n    import igoas.utils.a\n",
        "model/__init__.py": "",
        "model/net.py": "",
        "utils/c.py": "from igoas.model.net import x\n",
    })
    graph = import_graph.Graph(package)
    assert graph.circles() == [["utils.a", "utils.b"]]
    assert graph.upward() == ["utils.c -> model.net (up from utils to model)"]
    assert graph.hidden() == ["utils.b -> utils.a (inside a function)"]


def test_the_script_prints_the_graph_and_passes_its_own_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert import_graph.main(["--check", "--arrows"]) == 0
    out = capsys.readouterr().out
    assert "circles: 0; upward imports: 0; hidden imports: 0" in out
    assert "modules:" in out and "arrows:" in out
