"""The bundling cases of issue 3 as fixture packages, run through kernelpack and plain stickytape.

Each case is a small real package tree with an entry script and the stdout a correct run prints.
`python tests/bundle_cases.py` runs both tools on every case and prints the side-by-side table
that docs/bundler.md holds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":  # run as a script: make kernelpack and the helpers importable
    sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parent.parent)]

from bundle_helpers import empty_dirs, python312, run_offline, write_tree

from kernelpack.bundler.bundle import write_bundle
from kernelpack.errors import BundleError

ICON = bytes(range(256))  # not UTF-8: binary package data must survive byte for byte
# A real compiled module of this Python, copied into a fixture package as `fastmath._bisect`.
_BISECT_SO = Path(importlib.util.find_spec("_bisect").origin)


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    files: dict[str, str | bytes]
    entry: str
    expected: str = ""  # stdout of a correct run
    refused: str = ""  # or: kernelpack must refuse with an error that says this
    ours: tuple[str, ...] = ()  # `kernelpack bundle` options, paths relative to the fixture root
    stickytape: tuple[str, ...] = ()  # the equivalent stickytape options
    run_on_312: bool = False
    stickytape_fails: str = ""  # what goes wrong with plain stickytape 0.2.1


CASES = [
    Case(
        "relative_entry", "relative imports in the entry (`from .x import y`, `from . import z`)",
        {"app/__init__.py": "",
         "app/util.py": "def double(x):\n    return 2 * x\n",
         "app/consts.py": "N = 21\n",
         "app/main.py": "from . import consts\nfrom .util import double\n\n"
                        "print(double(consts.N), __name__)\n"},
        "app/main.py", expected="42 __main__\n",
        stickytape_fails="crashes while bundling (issues #26, #34)"),
    Case(
        "future_annotations", "`from __future__ import annotations` in the entry and modules",
        {"run.py": '"""Entry."""\nfrom __future__ import annotations\n\nfrom shapes.area import '
                   'area\n\n\ndef describe(x: Undefined) -> str:\n    return "ok"\n\n\n'
                   'print(area(3), describe.__annotations__["x"])\n',
         "shapes/__init__.py": "",
         "shapes/area.py": "from __future__ import annotations\n\n\n"
                           "def area(r: float) -> Later:\n    return round(3.14159 * r * r, 2)\n"},
        "run.py", expected="28.27 Undefined\n",
        stickytape_fails="SyntaxError: the future import is no longer first (#21, #32)"),
    Case(
        "subpackages", "nested subpackages, `__init__` re-exports, `mypkg/types.py` and "
        "`mypkg/logging.py`",
        {"shop/__init__.py": "from .core.cart import Cart\nfrom .types import Price\n\n"
                             "__all__ = ['Cart', 'Price']\n",
         "shop/types.py": "import types\n\nPrice = float\nNAMESPACE = types.SimpleNamespace\n",
         "shop/logging.py": "import logging\n\nlog = logging.getLogger('shop')\n\n\n"
                            "def note(message):\n    return f'shop-log:{message}'\n",
         "shop/core/__init__.py": "",
         "shop/core/cart.py": "from ..logging import note\nfrom ..types import Price\n"
                              "from .pricing.rules import discount\n\n\nclass Cart:\n"
                              "    def total(self, price: Price) -> str:\n"
                              "        return note(discount(price))\n",
         "shop/core/pricing/__init__.py": "",
         "shop/core/pricing/rules.py": "def discount(price):\n    return price * 0.5\n",
         "sell.py": "import logging\nimport types\n\nfrom shop import Cart\n"
                    "from shop.types import NAMESPACE\n\n"
                    "print(Cart().total(10), NAMESPACE is types.SimpleNamespace,\n"
                    "      logging.__file__.endswith('logging/__init__.py'))\n"},
        "sell.py", expected="shop-log:5.0 True True\n"),
    Case(
        "package_data", "package data via `importlib.resources.files()` and "
        "`Path(__file__).parent`",
        {"labels/__init__.py": "import json\nfrom importlib.resources import files\n"
                               "from pathlib import Path\n\n\ndef names():\n"
                               "    return json.loads((files(__package__) / 'names.json')"
                               ".read_text())\n\n\ndef sizes():\n"
                               "    return json.loads((Path(__file__).parent / 'data' / "
                               "'sizes.json').read_text())\n\n\ndef icon():\n"
                               "    return (files('labels') / 'data' / 'icon.bin').read_bytes()\n",
         "labels/names.json": '["cat", "dog"]\n',
         "labels/data/sizes.json": '{"cat": 4}\n',
         "labels/data/icon.bin": ICON,
         "show.py": "import hashlib\n\nfrom labels import icon, names, sizes\n\n"
                    "print(names(), sizes(), hashlib.sha256(icon()).hexdigest()[:12])\n"},
        "show.py",
        expected=f"['cat', 'dog'] {{'cat': 4}} {hashlib.sha256(ICON).hexdigest()[:12]}\n",
        stickytape_fails="FileNotFoundError: data files are not carried"),
    Case(
        "dynamic_import", "`importlib.import_module(name)` with `--include` (stickytape: "
        "`--add-python-module`)",
        {"extra/fastplug.py": "def run():\n    return 'fast plugin'\n",
         "load.py": "import importlib\n\nname = 'fast' + 'plug'\n"
                    "print(importlib.import_module(name).run())\n"},
        "load.py", expected="fast plugin\n",
        ours=("--path", "extra", "--include", "fastplug"),
        stickytape=("--add-python-path", "extra", "--add-python-module", "fastplug")),
    Case(
        "stdlib_312", "stdlib never inlined: built on 3.11, run on 3.12 (stickytape: with "
        "`--python-binary`, its way to reach installed packages)",
        {"helpers.py": "import sys\n\n\ndef version():\n    return sys.version_info[:2]\n",
         "check.py": "import dataclasses\nimport enum\nimport graphlib\nimport pathlib\n"
                     "import sysconfig\nimport tomllib\nimport typing\nimport zoneinfo\n"
                     "from concurrent import futures\n\nfrom helpers import version\n\n"
                     "stdlib = sysconfig.get_paths()['stdlib']\nmodules = [dataclasses, enum, "
                     "graphlib, pathlib, tomllib, typing, zoneinfo, futures]\n"
                     "print(version() >= (3, 11), 'stdlib from the runtime:',\n"
                     "      all(m.__file__.startswith(stdlib) for m in modules))\n"},
        "check.py", expected="True stdlib from the runtime: True\n",
        stickytape=("--python-binary", sys.executable), run_on_312=True,
        stickytape_fails="inlines the build's typing, pathlib, dataclasses, ... (#23)"),
    Case(
        "namespace_package", "a namespace package (a folder without `__init__.py`, PEP 420), with "
        "`--include` of one of its modules",
        {"greetings/greeting.py": "message = 'Hello'\n",
         "models/cbamresnet.py": "from .common import NAME\n",
         "models/common.py": "NAME = 'cbam'\n",
         "hello.py": "import importlib\n\nimport greetings.greeting\nfrom greetings import "
                     "greeting\n\nprint(greetings.greeting.message, greeting.message, "
                     "greetings.__file__,\n      importlib.import_module('models.cbam' + "
                     "'resnet').NAME)\n"},
        "hello.py", expected="Hello Hello None cbam\n",
        ours=("--include", "models.cbamresnet"), stickytape=("--add-python-module",
                                                             "models.cbamresnet"),
        stickytape_fails="greetings.__file__ is not None: it adds an empty __init__.py"),
    Case(
        "entry_imported_back", "a module imports the entry back by name (`from main import "
        "SCALE`), as `python main.py` allows",
        {"helper.py": "from main import SCALE\n\n\ndef scaled(x):\n    return x * SCALE\n",
         "main.py": "SCALE = 3\n\n\ndef run():\n    from helper import scaled\n\n"
                    "    print(scaled(2))\n\n\nif __name__ == '__main__':\n    run()\n"},
        "main.py", expected="6\n"),
    Case(
        "script_in_package_folder", "`python tools/predict.py` in a folder with `__init__.py`: "
        "its siblings are top-level modules, `sys.argv[0]` is its name",
        {"tools/__init__.py": "raise RuntimeError('not run by python tools/predict.py')\n",
         "tools/common.py": "NAME = 'sibling'\n",
         "tools/predict.py": "import argparse\n\nfrom common import NAME\n\n"
                             "print(NAME, argparse.ArgumentParser().prog)\n"},
        "tools/predict.py", expected="sibling predict.py\n",
        stickytape_fails="`sys.argv[0]` is the bundle's own name"),
    Case(
        "entry_without_suffix", "an entry file without `.py` inside a package folder",
        {"pkg/__init__.py": "", "pkg/helpers.py": "def twice(x):\n    return 2 * x\n",
         "pkg/run2": "from helpers import twice\n\nprint(twice(21))\n"},
        "pkg/run2", expected="42\n"),
    Case(
        "c_extension", "a C extension (`.so`): refused with a wheel-dataset hint",
        {"fastmath/__init__.py": "from ._bisect import bisect_left\n",
         f"fastmath/{_BISECT_SO.name}": _BISECT_SO.read_bytes(),
         "use.py": "from fastmath import bisect_left\n\nprint(bisect_left([1, 2, 3], 2))\n"},
        "use.py", refused="fastmath._bisect is a compiled extension module",
        stickytape_fails="builds a broken kernel: ModuleNotFoundError at run time"),
]


def build_fixture(case: Case, root: Path) -> Path:
    return write_tree(root / "src", case.files)


def ours_args(case: Case, src: Path) -> tuple[list[str], list[str]]:
    """`--path` folders and `--include` modules of the case, resolved under `src`."""
    options = dict(zip(case.ours[::2], case.ours[1::2], strict=True))
    return ([str(src / options["--path"])] if "--path" in options else [],
            [options["--include"]] if "--include" in options else [])


def bundle_with_stickytape(case: Case, src: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stickytape.main", case.entry,
                           "--output-file", str(out), *case.stickytape],
                          cwd=src, capture_output=True, text=True, timeout=60)


def interpreter(case: Case) -> str | None:
    return python312() if case.run_on_312 else sys.executable


def outcome(case: Case, script: Path, root: Path) -> str:
    """"pass", or what went wrong when `script` runs the way Kaggle runs a kernel."""
    work, temp = empty_dirs(root)
    done = run_offline(script, work, interpreter(case), temp)
    if done.returncode == 0 and done.stdout == case.expected:
        return "pass"
    last = (done.stderr.strip().splitlines() or [f"printed {done.stdout!r}"])[-1]
    return f"fail: {last}"


def stickytape_outcome(case: Case, root: Path) -> str:
    src = build_fixture(case, root)
    built = bundle_with_stickytape(case, src, root / "sticky.py")
    if built.returncode != 0:
        return f"fail: {built.stderr.strip().splitlines()[-1]}"
    return outcome(case, root / "sticky.py", root / "run-sticky")


def kernelpack_outcome(case: Case, root: Path) -> str:
    src = build_fixture(case, root)
    paths, include = ours_args(case, src)
    try:
        write_bundle(src / case.entry, root / "ours.py", paths, include=include)
    except BundleError as exc:
        return "pass (refused)" if case.refused and case.refused in str(exc) else f"fail: {exc}"
    return outcome(case, root / "ours.py", root / "run-ours")


if __name__ == "__main__":
    print("| case | stickytape 0.2.1 | kernelpack |\n|---|---|---|")
    for case in CASES:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            sticky, ours = stickytape_outcome(case, Path(a)), kernelpack_outcome(case, Path(b))
        print(f"| {case.title} | {sticky} | {ours} |")
