"""The package's imports point one way: no module imports one that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import transferlab

ROOT = Path(transferlab.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The transferlab modules ``path`` imports, at its top or inside its functions (type-checking imports aside):
    a circle through a function-level import is a circle too, only a later one."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names if a.name.startswith("transferlab")}
            elif isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("transferlab"):
                for a in sub.names:
                    child = f"{sub.module}.{a.name}"
                    found.add(child if child in modules else sub.module)
    return {m for m in found if m in modules}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: imports(path, set(paths)) for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circle() -> None:
    graph = import_graph()
    assert len(graph) > 40 and "transferlab.train.fit" in graph  # the walk found the package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_lower_layers_do_not_import_the_training_stack() -> None:
    """Data, modalities, preflight and config are read before any slow import: they never import train/,
    experiments/ or the api."""
    graph = import_graph()
    low = [m for m in graph if m.startswith(("transferlab.data", "transferlab.modality", "transferlab.preflight",
                                             "transferlab.catalogue",
                                             "transferlab.config", "transferlab.errors", "transferlab.files"))]
    for module in low:
        high = {m for m in graph[module] if m.startswith(("transferlab.train", "transferlab.experiments",
                                                          "transferlab.api", "transferlab.cli"))}
        assert not high, f"{module} imports {high}"


def folder(module: str) -> str:
    """A module's folder: ``transferlab.train.fit`` is in ``transferlab.train``; a top-level module is its own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_circle_between_folders() -> None:
    """The folders' arrows point one way too (cli -> api -> experiments -> train -> transfer -> modality -> sources ->
    data): a circle through function-level imports between folders is a layering that does not hold."""
    folders: dict[str, set[str]] = {}
    for module, deps in import_graph().items():
        folders.setdefault(folder(module), set()).update(folder(d) for d in deps if folder(d) != folder(module))
    assert find_cycle(folders) is None, " -> ".join(find_cycle(folders) or [])
    assert "transferlab.sources" not in {d for d in folders["transferlab.data"]}
    assert not folders["transferlab.sources"] & {"transferlab.modality", "transferlab.transfer", "transferlab.train"}
