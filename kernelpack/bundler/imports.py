"""What a Python source file imports, found statically (its syntax tree, never by running it).

Only absolute imports matter to the bundler: a relative import stays inside its top-level package,
which is bundled whole. Imports inside `try` blocks that handle ImportError are optional (a
fallback like `try: import simplejson as json except ImportError: import json`): the bundler
does not pull them in by itself, nor fails when they are missing. Imports that do not run when
the module is imported (inside a function, under `if __name__ == "__main__":` or
`if TYPE_CHECKING:`) are deferred: the user's code is judged by what its import needs.
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
    # `from name import a, b`: ("a", "b") (empty for `import name` and `import *`)
    names: tuple[str, ...] = ()
    # does not run when its module is imported: in a function (it runs when that is called),
    # or in a `__main__` / `TYPE_CHECKING` block (it never runs in a kernel)
    deferred: bool = False
    in_function: bool = False

    @property
    def top(self) -> str:
        return self.name.split(".")[0]


def _never_on_import(test: ast.expr) -> bool:
    """`__name__ == "__main__"` (a script's own part) or `TYPE_CHECKING` (for type checkers)."""
    if isinstance(test, ast.Name | ast.Attribute):
        return (test.id if isinstance(test, ast.Name) else test.attr) == "TYPE_CHECKING"
    return (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)
            and {_text(test.left), _text(test.comparators[0])} == {"__name__", "'__main__'"})


def _text(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    return repr(node.value) if isinstance(node, ast.Constant) else ""


def _handles_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(t, ast.Name) and t.id in _IMPORT_ERRORS for t in types)


class _ImportCollector(ast.NodeVisitor):
    def __init__(self) -> None:
        self.refs: list[ImportRef] = []
        self._optional = 0
        self._deferred = 0
        self._functions = 0

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.refs.append(ImportRef(alias.name, node.lineno, 0, self._optional > 0,
                                       deferred=self._deferred > 0,
                                       in_function=self._functions > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        names = tuple(alias.name for alias in node.names if alias.name != "*")
        self.refs.append(ImportRef(node.module or "", node.lineno, node.level, self._optional > 0,
                                   names, self._deferred > 0, self._functions > 0))

    def _visit_deferred(self, node: ast.AST) -> None:
        self._deferred += 1
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1
        self._deferred -= 1

    # A function's body runs when it is called, not when its module is imported.
    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _visit_deferred

    def visit_If(self, node: ast.If) -> None:
        if not _never_on_import(node.test):
            self.generic_visit(node)
            return
        self.visit(node.test)
        self._visit_deferred_body(node.body)
        for child in node.orelse:
            self.visit(child)

    def _visit_deferred_body(self, body: list[ast.stmt]) -> None:
        self._deferred += 1
        for child in body:
            self.visit(child)
        self._deferred -= 1

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
