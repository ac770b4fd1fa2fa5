"""The programs kernelpack writes out as text: the kernel's entry and bundle bootstrap, the
sandbox's boot code and notebook runner.

Each is a real module (linted, imported by its unit tests) that runs elsewhere, inlined as text:
it imports only the standard library and what the Kaggle image ships, never kernelpack. What a
build decides is written into assignment lines that end with FILL_MARKER: the module's own value
is a harmless default, and `fill_template` replaces the whole line with `NAME = EXPRESSION`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .. import read_template
from ..errors import KernelpackError

FILL_MARKER = "# kernelpack: fill"
_MARKED = re.compile(rf"^([A-Za-z_][A-Za-z0-9_]*) = .*  {re.escape(FILL_MARKER)}$", re.M)


class TemplateError(KernelpackError):
    """A template and the values given for it disagree (a marker line was edited away): the
    program would ship with a default in place of what the build decided."""


def fill_template(name: str, values: Mapping[str, str]) -> str:
    """The template `name` (a file of this folder) filled in: see `fill`."""
    return fill(read_template(name), values, f"templates/{name}")


def fill(text: str, values: Mapping[str, str], where: str) -> str:
    """`text` with each marked assignment `NAME = ...` replaced by `NAME = values[NAME]` (Python
    source, e.g. a repr). Every marked line must get a value and every value a marked line, once;
    `where` names the template in the error."""
    marked = [found[1] for found in _MARKED.finditer(text)]
    for variable in marked:
        if marked.count(variable) > 1:
            raise TemplateError(f"{where}: {variable} is marked to be filled in more than once; "
                                "keep one marked assignment")
        if variable not in values:
            raise TemplateError(f"{where}: {variable} is marked to be filled in, but the build "
                                "gives it no value")
    for variable in values:
        if variable not in marked:
            raise TemplateError(f"{where}: no assignment `{variable} = ...  {FILL_MARKER}` to "
                                "fill in; restore the marked line")
    # A function, not a replacement string: the values' backslashes stay as they are.
    return _MARKED.sub(lambda found: f"{found[1]} = {values[found[1]]}", text)
