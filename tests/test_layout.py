"""The layout's rules, read from the source: no import cycles between modules, no arrows back up
between kernelpack's parts, and the runtime never imports the host tool (it is inlined into
kernels that have no kernelpack). Imports inside functions count: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("inference_core", "kernelpack")


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package's __init__)."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


MODULES = _modules()


def _known(name: str) -> str | None:
    """The project module `name` is, or lies in (`a.b.func` -> `a.b`); None outside."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    path, is_package = MODULES[module]
    package = module if is_package else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets |= {_known(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] \
                if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            # `from pkg import module` names a module; `from module import name` the module
            targets |= {_known(f"{source}.{alias.name}") if f"{source}.{alias.name}" in MODULES
                        else _known(source) for alias in node.names}
    return targets - {None, module}


GRAPH = {module: _imports(module) for module in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _part(module: str) -> str:
    """A module's part: `kernelpack.kaggle.service.x` -> `kernelpack.kaggle`; a top-level module
    (`kernelpack.config`) is its own part."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_module_import_cycle():
    assert _cycles(GRAPH) == []


def test_no_cycle_between_kernelpacks_parts():
    parts: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        if module.startswith("kernelpack."):
            own = _part(module)
            parts.setdefault(own, set()).update(
                _part(t) for t in targets if t.startswith("kernelpack.") and _part(t) != own)
    assert _cycles(parts) == []


def test_the_runtime_never_imports_the_host_tool():
    arrows = sorted((module, target) for module, targets in GRAPH.items()
                    if module.startswith("inference_core") for target in targets
                    if target.startswith("kernelpack"))
    assert arrows == []


def test_the_reader_sees_imports_and_cycles():
    # The checks above must be able to fail: the reader finds a known arrow, and a cycle.
    assert "inference_core.registry" in GRAPH["inference_core.model_factory"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
