import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import inference_core
from kernelpack.bundle import package_sources, render_bundle


def _python312() -> str | None:
    found = shutil.which("python3.12")
    candidates = [found] if found else []
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))
    for candidate in candidates:
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


INTERPRETERS = [sys.executable] + ([_python312()] if _python312() else [])


@pytest.fixture
def greeter(tmp_path) -> Path:
    package = tmp_path / "src" / "greeter"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from .sub.words import hello\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "words.py").write_text(
        "def hello(name):\n    return f'hello {name}'\n\n\n"
        "def fail():\n    raise KeyError('boom')\n")
    return package


def _run(interpreter, script: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([interpreter, "-I", str(script)], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin",
                                                      "TMPDIR": str(cwd)})


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_bundle_runs_under_each_python_and_cleans_up(greeter, tmp_path, interpreter):
    entry = "import sys\nfrom greeter import hello\nprint(hello('kaggle'))\nsys.exit(7)\n"
    script = tmp_path / "out.py"
    script.write_text(render_bundle("entry.py", entry, package_sources(greeter)))
    empty = tmp_path / "empty"
    empty.mkdir()
    done = _run(interpreter, script, empty)
    assert done.stdout == "hello kaggle\n", done.stderr
    assert done.returncode == 7
    assert list(empty.iterdir()) == []


def test_tracebacks_name_the_bundled_module_and_its_line(greeter, tmp_path):
    entry = "from greeter.sub.words import fail\nfail()\n"
    script = tmp_path / "out.py"
    script.write_text(render_bundle("entry.py", entry, package_sources(greeter)))
    done = _run(sys.executable, script, tmp_path)
    assert done.returncode == 1
    assert "greeter/sub/words.py\", line 6, in fail" in done.stderr
    assert "KeyError: 'boom'" in done.stderr


@pytest.mark.skipif(len(INTERPRETERS) < 2, reason="no Python 3.12 interpreter on this machine")
def test_the_runtime_compiles_under_python_312(tmp_path):
    # torch has no 3.12 wheel on this machine, so 3.12 checks syntax and the stdlib bootstrap.
    sources = package_sources(Path(inference_core.__file__).parent)
    for relative, source in sources.items():
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source)
    done = subprocess.run([INTERPRETERS[1], "-m", "compileall", "-q", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
