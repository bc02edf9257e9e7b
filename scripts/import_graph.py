"""Print igoas's import graph: modules, arrows, circles and upward imports.

    python scripts/import_graph.py            # the summary and every rule broken
    python scripts/import_graph.py --arrows   # also every package-to-package arrow
    python scripts/import_graph.py --check    # exit 1 when a rule is broken

The floors below are the layering of docs/ARCHITECTURE.md, bottom first: a module may import
its own package and the floors beneath it, never a floor above and never a sibling on its
own floor. Imports are read with `ast`, module level and inside functions alike, so a lazy
import cannot hide an arrow. tests/test_architecture.py runs the same checks.
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "igoas"

FLOORS: tuple[tuple[str, ...], ...] = (
    ("utils",),  # errors, files, progress, optional extras, seeds, the version
    ("imaging", "runtime"),  # reading images, and the input recipe that travels with a model; the torch-free
                            # runtime of exported models (numpy, PIL, onnxruntime/OpenVINO)
    ("config",),  # the schema and its ranges
    ("compute",),  # device, precision and processes: the runtime policy
    ("model",),  # backbones, heads, IGOAS, the occlusion and the losses
    ("artifacts",),  # checkpoints, run folders, provenance
    ("corruptions", "retrieval"),  # image corruptions; features files and search indexes
    ("data",),  # datasets, the synthetic set, transforms, samplers, loaders
    ("evaluation",),  # metrics, re-ranking, and embedding a model over a dataset
    ("viz",),  # figures and the HTML report
    ("training", "robustness", "interop"),  # the training loop; stress and corruption benchmarks; other code's checkpoints
    ("deploy",),  # ReIDModel, back ends, export, extraction, serve
    ("studies",),  # ablation, reproduce, pretrain, demo
    ("commands",),  # one module per `igoas` subcommand
    ("cli",),
    ("__main__", "igoas"),  # `python -m igoas`; the package face
)

# Imports of igoas's own modules made inside a function, each with the reason it must stay there.
DEFERRED = {
    ("imaging.preprocess", "imaging.images"): "the recipe (and config.py, which reads its defaults) imports without torch",
    ("commands.serve", "deploy.serve.app"): "the page is FastAPI (the serve extra); `igoas serve --help` works without it",
}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """`src/igoas/data/base.py` -> `data.base`; the package's own `__init__` -> `igoas`."""
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "igoas"


def package_of(module: str) -> str:
    return module.split(".")[0]


def floor_of(module: str) -> int:
    package = package_of(module)
    for number, packages in enumerate(FLOORS):
        if package in packages:
            return number
    raise KeyError(f"{module}: its package {package!r} stands on no floor; add it to FLOORS")


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [f"{node.module}.{alias.name}" for alias in node.names]  # the name may be a module
    elif isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        return []
    return [name.removeprefix("igoas.") if name != "igoas" else "igoas"
            for name in names if name == "igoas" or name.startswith("igoas.")]


def read_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, made inside a function) for every igoas import in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, inside: bool) -> None:
        found.extend((module, inside) for module in _imported(node))
        nested = inside or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, nested)

    visit(tree, False)
    return found


def resolve(target: str, modules: set[str]) -> str:
    """The module an import names: `from igoas.utils import fileio` is an arrow to `utils.fileio`,
    `from igoas.data import build_dataset` one to `data` (its face)."""
    while target not in modules and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


class Graph:
    """Modules and arrows of the package, with the rules they break."""

    def __init__(self, root: Path = PACKAGE) -> None:
        paths = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
        self.root = root
        self.modules = set(paths)
        self.arrows: dict[str, set[str]] = defaultdict(set)
        self.deferred: list[tuple[str, str]] = []
        for module, path in paths.items():
            for target, inside in read_imports(path):
                target = resolve(target, self.modules)
                if target != module:
                    self.arrows[module].add(target)
                    if inside:
                        self.deferred.append((module, target))

    @property
    def top_level(self) -> list[str]:
        return sorted(m for m in self.modules if "." not in m and m != "igoas" and not (self.root / m).is_dir())

    def arrow_count(self) -> int:
        return sum(len(targets) for targets in self.arrows.values())

    def circles(self) -> list[list[str]]:
        """Strongly connected groups of two or more modules (Tarjan)."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        groups: list[list[str]] = []

        def connect(module: str) -> None:
            index[module] = low[module] = len(index)
            stack.append(module)
            on_stack.add(module)
            for target in sorted(self.arrows.get(module, ())):
                if target not in index:
                    connect(target)
                    low[module] = min(low[module], low[target])
                elif target in on_stack:
                    low[module] = min(low[module], index[target])
            if low[module] == index[module]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == module:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))

        sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
        for module in sorted(self.modules):
            if module not in index:
                connect(module)
        return sorted(groups)

    def upward(self) -> list[str]:
        """Arrows to a higher floor, or to a sibling package on the same floor."""
        broken = []
        for module in sorted(self.arrows):
            for target in sorted(self.arrows[module]):
                if package_of(module) == package_of(target):
                    continue
                if floor_of(target) > floor_of(module):
                    broken.append(f"{module} -> {target} (up from {package_of(module)} to {package_of(target)})")
                elif floor_of(target) == floor_of(module):
                    broken.append(f"{module} -> {target} (sideways between {package_of(module)} "
                                  f"and {package_of(target)})")
        return broken

    def hidden(self) -> list[str]:
        """Imports of igoas's own modules made inside functions without a reason in DEFERRED."""
        return sorted({f"{module} -> {target} (inside a function)"
                       for module, target in self.deferred if (module, target) not in DEFERRED})

    def package_arrows(self) -> dict[str, set[str]]:
        between: dict[str, set[str]] = defaultdict(set)
        for module, targets in self.arrows.items():
            for target in targets:
                if package_of(module) != package_of(target):
                    between[package_of(module)].add(package_of(target))
        return between

    def problems(self) -> list[str]:
        return ([f"circle: {' -> '.join(group)}" for group in self.circles()]
                + [f"upward: {line}" for line in self.upward()]
                + [f"hidden: {line}" for line in self.hidden()])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arrows", action="store_true", help="also list every package-to-package arrow")
    parser.add_argument("--check", action="store_true", help="exit 1 when a rule is broken")
    args = parser.parse_args(argv)
    graph = Graph()
    packages = sorted({package_of(m) for m in graph.modules} - set(graph.top_level) - {"igoas"})
    print(f"modules: {len(graph.modules)} ({len(graph.top_level)} at the top: {', '.join(graph.top_level)})")
    print(f"packages: {len(packages)} ({', '.join(packages)})")
    print(f"arrows: {graph.arrow_count()} between modules, "
          f"{sum(map(len, graph.package_arrows().values()))} between packages")
    print("floors, bottom first:")
    for number, floor in enumerate(FLOORS):
        print(f"  {number:2d}  {', '.join(floor)}")
    if args.arrows:
        for package, targets in sorted(graph.package_arrows().items(), key=lambda item: floor_of(item[0])):
            print(f"  {package} -> {', '.join(sorted(targets, key=floor_of))}")
    for (module, target), why in DEFERRED.items():
        print(f"deferred on purpose: {module} -> {target}: {why}")
    problems = graph.problems()
    circles, upward = len(graph.circles()), len(graph.upward())
    print(f"circles: {circles}; upward imports: {upward}; hidden imports: {len(graph.hidden())}")
    for line in problems:
        print("  " + line)
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
