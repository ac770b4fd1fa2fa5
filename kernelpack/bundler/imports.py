"""What a Python source file imports, found statically (its syntax tree, never by running it).

Only absolute imports matter to the bundler: a relative import stays inside its top-level package,
which is bundled whole. Imports inside `try` blocks that handle ImportError are optional (a
fallback like `try: import simplejson as json except ImportError: import json`): the bundler
does not pull them in by itself, nor fails when they are missing.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass

# Handlers that make the imports in their `try` optional.
_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


@dataclass(frozen=True)
class ImportRef:
    """`import name...` at `line`; `name` is the full dotted name, `level` > 0 when relative."""

    name: str
    line: int
    level: int = 0
    optional: bool = False

    @property
    def top(self) -> str:
        return self.name.split(".")[0]


def _handles_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(t, ast.Name) and t.id in _IMPORT_ERRORS for t in types)


class _ImportCollector(ast.NodeVisitor):
    def __init__(self) -> None:
        self.refs: list[ImportRef] = []
        self._optional = 0

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.refs.append(ImportRef(alias.name, node.lineno, 0, self._optional > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.refs.append(ImportRef(node.module or "", node.lineno, node.level, self._optional > 0))

    def visit_Try(self, node: ast.Try | ast.TryStar) -> None:
        optional = any(_handles_import_error(h) for h in node.handlers)
        self._optional += optional
        for child in [*node.body, *node.handlers]:
            self.visit(child)
        self._optional -= optional
        for child in [*node.orelse, *node.finalbody]:
            self.visit(child)

    visit_TryStar = visit_Try


def scan_imports(source: bytes, filename: str) -> list[ImportRef]:
    """Every import statement of `source`, in file order, including those inside functions.

    Raises SyntaxError (with `filename`) when the source does not parse."""
    collector = _ImportCollector()
    with warnings.catch_warnings():
        # Vendored code's own SyntaxWarnings (invalid escapes, `is` with a literal) are not ours.
        warnings.simplefilter("ignore")
        tree = ast.parse(source, filename)
    collector.visit(tree)
    return sorted(collector.refs, key=lambda ref: ref.line)
