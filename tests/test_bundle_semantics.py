"""A bundle runs as its author runs the script: each case is a small source tree, run unbundled
(`python ENTRY` from the tree, or `python -m`), then bundled and run the way Kaggle runs a kernel
(`python -I` in an empty folder, and on Python 3.12 where there is one); the outputs must match.

The cases cover what any single-file bundler must get right (single files, the stdlib left
alone, modules and packages, every form of `from ... import`, renamed and circular imports, every
form of explicit relative import, `__init__` run implicitly, triple-quoted sources, `--include`
for dynamic imports), namespace packages, and the ways an entry script is run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from bundle_helpers import empty_dirs, python312, run_offline, write_tree

from kernelpack.bundler.bundle import Entry, bundle, write_bundle
from kernelpack.cli import main
from kernelpack.errors import BundleError

INTERPRETERS = [sys.executable] + ([python312()] if python312() else [])
GREETING = {"greeting.py": "message = 'Hello'\n\n\ndef print_stdout(value):\n    print(value)\n"}


@dataclass(frozen=True)
class Script:
    name: str
    files: dict[str, str]
    entry: str  # as its author runs it: a path under the tree, or "-m package.module"
    paths: tuple[str, ...] = ()  # --path folders (on PYTHONPATH for the unbundled run)
    include: tuple[str, ...] = ()


SCRIPTS = [
    Script("single_file", {"hello": "#!/usr/bin/env python\nprint('Hello')\n"}, "hello"),
    Script("stdlib_left_alone", {
        **GREETING,
        "run.py": "import hashlib\nimport xml.etree.ElementTree\n\nimport greeting\n\n"
                  "print(hashlib.sha1(b'Hello').hexdigest(), xml.etree.ElementTree.__name__)\n"
                  "print(greeting.message, xml.etree.ElementTree.__file__ != __file__)\n"},
        "run.py"),
    Script("module_and_package", {
        **GREETING,
        "parcel/__init__.py": "message = 'parcel'\n",
        "shelf/__init__.py": "",
        "shelf/books.py": "title = 'Dune'\n",
        "run.py": "import greeting\nimport parcel\nimport shelf.books\n\n"
                  "print(greeting.message, parcel.message, shelf.books.title)\n"},
        "run.py"),
    Script("every_from_import_form", {
        **GREETING,
        "shelf/__init__.py": "from .books import title\n",
        "shelf/books.py": "title = 'Dune'\n__all__ = ['title']\n",
        "shelf/lamp.py": "def light():\n    return 'on'\n",
        "run.py": "from greeting import message\nfrom greeting import print_stdout, message as m2\n"
                  "from shelf import books\nfrom shelf import books as b, lamp\n"
                  "from shelf.books import *\nfrom shelf import (\n    title as t,\n)\n\n"
                  "print_stdout(message + m2)\nprint(books.title, b is books, lamp.light(), "
                  "title, t)\n"},
        "run.py"),
    Script("renamed_imports", {
        **GREETING,
        "shelf/__init__.py": "",
        "shelf/books.py": "title = 'Dune'\n",
        "run.py": "import greeting as g\nimport shelf.books as sb\nfrom greeting import message "
                  "as m\nfrom shelf import books as bk\n\nprint(g.message, sb.title, m, "
                  "bk.title)\n"},
        "run.py"),
    Script("circular_imports", {
        "first.py": "import second\n\nNAME = 'first'\n\n\ndef other():\n    return second.NAME\n",
        "second.py": "import first\n\nNAME = 'second'\n\n\ndef other():\n"
                     "    return first.NAME\n",
        "hello": "import first\nimport second\n\nprint(first.other(), second.other())\n"},
        "hello"),
    Script("explicit_relative_imports", {
        "greetings/__init__.py": "from . import greeting\nfrom .greeting import message\n"
                                 "from .words import hello as word\n",
        "greetings/greeting.py": "from .messages import message\nfrom . import messages\n",
        "greetings/messages.py": "message = 'Hello'\n",
        "greetings/words/__init__.py": "from ..messages import message as hello\n",
        "greetings/words/deep/__init__.py": "",
        "greetings/words/deep/leaf.py": "from ...greeting import messages\nfrom .. import "
                                        "hello\n\nboth = (messages.message, hello)\n",
        "run.py": "import greetings\nimport greetings.words.deep.leaf\n\n"
                  "print(greetings.message, greetings.word, greetings.greeting.messages.message)"
                  "\nprint(greetings.words.deep.leaf.both)\n"},
        "run.py"),
    Script("implicit_init_and_imports_in_imported_modules", {
        "greetings/__init__.py": "from greetings.english import message\nloud = message.upper()\n",
        "greetings/english.py": "message = 'Hello'\n",
        "greetings/irrelevant.py": "",
        "run.py": "import greetings.irrelevant\n\nprint(greetings.message, greetings.loud)\n"},
        "run.py"),
    Script("triple_quoted_sources", {
        "greeting.py": "message = \"Hello\\n'''\\n\" + '\"\"\"'\n\n\ndef doc():\n"
                       "    '''A docstring with \"\"\" inside.'''\n\n\n",
        "run.py": '"""The entry\'s own docstring: \'\'\' and \\"""."""\nimport greeting\n\n'
                  "print(greeting.message)\nprint(greeting.doc.__doc__, __doc__)\n"},
        "run.py"),
    Script("include_dynamic_imports_beside_the_entry_and_under_path", {
        "greeting.py": "message = 'beside'\n",
        "models/cbamresnet.py": "name = 'cbam (namespace folder beside the entry)'\n",
        "extra/plug.py": "message = 'from --path'\n",
        "run.py": "import importlib\n\nfor name in ['greet' + 'ing', 'models.cbam' + 'resnet', "
                  "'pl' + 'ug']:\n    module = importlib.import_module(name)\n"
                  "    print(getattr(module, 'message', None) or module.name)\n"},
        "run.py", paths=("extra",), include=("greeting", "models.cbamresnet", "plug")),
    Script("namespace_packages", {
        "greetings/greeting.py": "message = 'Hello'\n",
        "greetings/sub/leaf.py": "from ..greeting import message\n",
        "greetings/words.txt": "hola\n",
        "extra/greetings/second.py": "message = 'second portion'\n",
        "run.py": "import importlib.resources\nimport pkgutil\n\nimport greetings.greeting\n"
                  "from greetings import second\nfrom greetings.sub import leaf\n\n"
                  "print(greetings.greeting.message, second.message, leaf.message)\n"
                  "print(greetings.__file__, sorted(m.name for m in pkgutil.iter_modules("
                  "greetings.__path__)))\nprint((importlib.resources.files('greetings') / "
                  "'words.txt').read_text().strip())\n"},
        "run.py", paths=("extra",)),
    Script("entry_imported_back_by_its_own_name", {
        "main.py": "SCALE = 3\n\n\ndef run():\n    from helper import scaled\n"
                   "    print(scaled(2), __name__)\n\n\nif __name__ == '__main__':\n    run()\n",
        "helper.py": "from main import SCALE\n\n\ndef scaled(x):\n    return x * SCALE\n"},
        "main.py"),
    Script("script_in_a_package_folder_imports_its_siblings", {
        "tools/__init__.py": "raise RuntimeError('python tools/predict.py never runs this')\n",
        "tools/common.py": "NAME = 'sibling'\n",
        "tools/predict.py": "import sys\n\nfrom common import NAME\n\nprint(NAME, __name__, "
                            "__package__)\n"},
        "tools/predict.py"),
    Script("entry_without_py_suffix_in_a_package", {
        "pkg/__init__.py": "",
        "pkg/helpers.py": "def twice(x):\n    return 2 * x\n",
        "pkg/run2": "from helpers import twice\n\nprint(twice(21))\n"},
        "pkg/run2"),
    Script("relative_imports_run_as_a_module_of_the_package", {
        "app/__init__.py": "print('package init runs first')\n",
        "app/util.py": "def double(x):\n    return 2 * x\n",
        "app/main.py": "from . import util\nfrom .util import double\n\n"
                       "print(double(21), util.double(1), __name__, __package__)\n"},
        "-m app.main"),
    Script("imports_of_its_own_package_by_name_run_it_as_a_module", {
        "app/__init__.py": "",
        "app/util.py": "def double(x):\n    return 2 * x\n",
        "app/main.py": "from app.util import double\n\nprint(double(21), __name__, __package__)\n"},
        "-m app.main"),
    Script("argv_zero_is_the_entry_name", {
        "train.py": "import argparse\nimport sys\n\nprint(sys.argv[0])\n"
                    "print(argparse.ArgumentParser().format_usage().strip())\n"},
        "train.py"),
]


def _unbundled(script: Script, src: Path, python: str) -> subprocess.CompletedProcess:
    """The script as its author runs it: from the tree, PYTHONPATH holding the --path folders."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(
        str(src / path) for path in script.paths), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([python, "-s", *script.entry.split()], cwd=src, capture_output=True,
                          text=True, timeout=60, env=env)


@pytest.mark.parametrize("python", INTERPRETERS, ids=lambda p: Path(p).name)
@pytest.mark.parametrize("script", SCRIPTS, ids=[script.name for script in SCRIPTS])
def test_the_bundle_prints_what_the_unbundled_script_prints(script, python, tmp_path, capsys):
    src = write_tree(tmp_path / "src", script.files)
    before = _unbundled(script, src, python)
    assert before.returncode == 0 and before.stdout, before.stderr  # a real, working script
    entry = script.entry.removeprefix("-m ").replace(".", "/") + ".py" \
        if script.entry.startswith("-m ") else script.entry
    argv = ["bundle", str(src / entry), "-o", str(tmp_path / "out.py")]
    argv += [f"--path={src / path}" for path in script.paths]
    argv += [f"--include={name}" for name in script.include]
    assert main(argv) == 0, capsys.readouterr().err
    assert "warning" not in capsys.readouterr().err
    work, temp = empty_dirs(tmp_path)
    after = run_offline(tmp_path / "out.py", work, python, temp)
    assert (after.returncode, after.stdout, after.stderr) == (0, before.stdout, "")
    assert list(work.iterdir()) == [] and list(temp.iterdir()) == []


def test_a_script_entry_runs_from_memory_and_goes_on_disk_only_when_imported_by_name(tmp_path):
    alone = bundle(Entry("run.py", b"print(1)\n", folder=tmp_path))
    assert "('run.py', None, False)" in alone.text
    back = next(s for s in SCRIPTS if s.name == "entry_imported_back_by_its_own_name")
    src = write_tree(tmp_path / "src", back.files)
    result = bundle(Entry("main.py", (src / "main.py").read_bytes(), folder=src))
    assert "('main.py', None, True)" in result.text and result.local == ("helper", "main")
    with pytest.raises(BundleError, match=r"main\.py: the entry script has the name of another "
                                          "bundled module; rename the script"):
        bundle(Entry("main.py", b"import helper\n"), paths=[src])


def test_an_entry_with_relative_imports_that_cannot_be_a_module_is_refused(tmp_path):
    src = write_tree(tmp_path, {"pkg/__init__.py": "", "pkg/util.py": "x = 1\n",
                                "pkg/run2": "from .util import x\n"})
    with pytest.raises(BundleError, match=r"run2:1: a relative import needs the entry to run as "
                                          r"a module of its package.*\.py file"):
        write_bundle(src / "pkg" / "run2", tmp_path / "out.py")


def test_a_bare_folder_named_like_the_stdlib_does_not_shadow_it(tmp_path):
    # Python prefers the real `email` package to a namespace folder found earlier on the path.
    src = write_tree(tmp_path / "src", {"email/notes.txt": "not code\n",
                                        "run.py": "import email.utils\n\nprint('ok')\n"})
    result = write_bundle(src / "run.py", tmp_path / "out.py")
    assert result.files == ("run.py",) and result.local == ()


def test_an_executable_entry_with_a_shebang_gives_an_executable_bundle_with_it(tmp_path):
    src = write_tree(tmp_path / "src", {"hello": f"#!{sys.executable} -E\nimport sys\n\n"
                                                 "print(sys.flags.ignore_environment)\n"})
    (src / "hello").chmod(0o755)
    unbundled = subprocess.run([src / "hello"], capture_output=True, text=True, cwd=src)
    write_bundle(src / "hello", tmp_path / "out.py")
    work, temp = empty_dirs(tmp_path)
    done = subprocess.run([tmp_path / "out.py"], capture_output=True, text=True, cwd=work,
                          env={"TMPDIR": str(temp)})
    assert (done.returncode, done.stdout) == (unbundled.returncode, unbundled.stdout) == (0, "1\n")
    assert (tmp_path / "out.py").read_text().startswith(f"#!{sys.executable} -E\n# Generated")
