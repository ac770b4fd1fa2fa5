"""What the bundler checks and warns about, and what the bundle keeps off the disk: imports of
modules Python 3.12 removed, fallback imports left out, `-o` onto the bundled code, installed
namespace packages (PYTHONPATH ignored), warnings from vendored code, and the key of a private
kernel (never written to the unpack folder, even while the kernel runs or when it is killed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from bundle_helpers import empty_dirs, python_without, run_offline, write_tree

from kernelpack.bundler.bundle import Entry, bundle
from kernelpack.cli import main
from kernelpack.kernel.build import build_kernel, embeds_key

REPO = Path(__file__).resolve().parents[1]


def _site_packages(python: Path) -> Path:
    """The site-packages folder of a `python_without` view."""
    return python.parent.parent / "lib" / Path(sysconfig.get_paths()["purelib"]).parent.name \
        / "site-packages"


def test_imports_of_modules_removed_in_312_are_warned_with_file_line_and_fix(tmp_path, capsys):
    src = write_tree(tmp_path, {"old.py": "import os\nimport imp\n\nfrom distutils.version "
                                          "import LooseVersion\n\ntry:\n    import asyncore\n"
                                          "except ImportError:\n    asyncore = None\n"})
    assert main(["bundle", str(src / "old.py"), "-o", str(tmp_path / "out.py")]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "kernelpack: warning: old.py:2: `import imp`: imp was removed from the standard library "
        "in Python 3.12, which Kaggle runs; use importlib (importlib.util."
        "spec_from_file_location and module_from_spec for imp.load_source, importlib.reload for "
        "imp.reload)",
        "kernelpack: warning: old.py:4: `import distutils.version`: distutils was removed from "
        "the standard library in Python 3.12, which Kaggle runs; use setuptools (whose copy of "
        "distutils is all that is left there), packaging.version.Version for LooseVersion/"
        "StrictVersion, shutil.which for find_executable, sysconfig for paths",
    ]  # asyncore has a fallback: no warning
    assert bundle(Entry("e.py", b"import imp\n")).files == ("e.py",)  # never inlined


def test_a_fallback_import_that_resolves_here_but_is_left_out_is_warned():
    guarded = b"try:\n    import munch\nexcept ImportError:\n    munch = None\n"
    result = bundle(Entry("e.py", guarded))
    assert result.vendored == () and len(result.warnings) == 1
    assert result.warnings[0].startswith("e.py:2: `import munch` sits under try/except "
                                         "ImportError and munch is installed here")
    assert "--vendor munch" in result.warnings[0]
    assert bundle(Entry("e.py", guarded), vendor=["munch"]).warnings == ()
    assert bundle(Entry("e.py", guarded + b"import munch\n")).warnings == ()  # needed anyway
    quiet = b"try:\n    import numpy\n    import no_such_module_kp\nexcept ImportError:\n    pass\n"
    assert bundle(Entry("e.py", quiet)).warnings == ()  # on the image / installed nowhere
    # vendored packages' own fallbacks are theirs (munch guards importlib_metadata)
    assert bundle(Entry("e.py", b"import pretrainedmodels\n")).warnings == ()


def test_output_onto_the_entry_or_into_the_bundled_code_is_refused(tmp_path, capsys):
    src = write_tree(tmp_path / "src", {"run.py": "import shelf\nimport models.net\n",
                                        "shelf/__init__.py": "", "models/net.py": ""})
    before = (src / "run.py").read_bytes()
    for output, says in [(src / "run.py", "is the entry script itself"),
                         (src / "shelf" / "out.py", "lies inside shelf"),
                         (src / "models" / "kernel.py", "lies inside models")]:
        assert main(["bundle", str(src / "run.py"), "-o", str(output)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"-o {output}: {says}" in err
        assert "write" in err and "-o build/kernel.py" in err
    assert (src / "run.py").read_bytes() == before
    assert not (src / "shelf" / "out.py").exists() and not (src / "models" / "kernel.py").exists()
    assert main(["bundle", str(src / "run.py"), "-o", str(src / "out.py")]) == 0  # beside: fine


def test_an_installed_namespace_package_is_vendored_and_pythonpath_only_fills_gaps(tmp_path):
    # The interpreter reaches `greetings` (a folder without __init__.py) through a .pth file, as
    # an installed namespace package; PYTHONPATH offers an empty impostor portion first.
    src = write_tree(tmp_path / "src", {
        "hello": "import greetings.greeting\n\nprint(greetings.greeting.message)\n",
        "packages/greetings/greeting.py": "message = 'Hello'\n",
        "bad/greetings/greeting.py": "",
        "only/onlyhere.py": "X = 'found through PYTHONPATH alone'\n",
        "uses_pythonpath.py": "import greetings.greeting\nimport onlyhere\n\n"
                              "print(greetings.greeting.message, onlyhere.X)\n"})
    python = python_without(set(), tmp_path / "env")
    (_site_packages(python) / "kp.pth").write_text(f"{REPO}\n")
    (_site_packages(python) / "greetings.pth").write_text(f"{src / 'packages'}\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{src / 'bad'}{os.pathsep}{src / 'only'}",
           "NO_ALBUMENTATIONS_UPDATE": "1"}
    built = subprocess.run([python, "-m", "kernelpack", "bundle", str(src / "hello"), "-o",
                            str(tmp_path / "out.py"), "--vendor", "greetings"],
                           capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert "vendored: greetings" in built.stdout and built.stderr == ""
    unbundled = subprocess.run([python, "-E", "hello"], cwd=src, capture_output=True, text=True)
    # Run where the image has a regular package of that name: the bundle's own still wins.
    image = python_without(set(), tmp_path / "image")
    write_tree(_site_packages(image), {"greetings/__init__.py": "message = 'the image'\n"})
    for i, interpreter in enumerate((sys.executable, str(image))):
        work, temp = empty_dirs(tmp_path / f"run{i}")
        done = run_offline(tmp_path / "out.py", work, interpreter, temp)
        assert (done.returncode, done.stdout) == (0, unbundled.stdout) == (0, "Hello\n"), \
            done.stderr
    # A module found only through PYTHONPATH is still taken from there.
    built = subprocess.run([python, "-m", "kernelpack", "bundle", str(src / "uses_pythonpath.py"),
                            "-o", str(tmp_path / "out2.py")], capture_output=True, text=True,
                           timeout=120, env=env, cwd=tmp_path)
    assert "vendored: greetings, onlyhere" in built.stdout, built.stderr
    work, temp = empty_dirs(tmp_path / "run2")
    done = run_offline(tmp_path / "out2.py", work, tmpdir=temp)
    assert done.stdout == "Hello found through PYTHONPATH alone\n", done.stderr


@pytest.mark.slow
def test_warnings_compiling_vendored_code_are_silenced_but_not_the_users(tmp_path):
    src = write_tree(tmp_path / "src", {
        "mine.py": "def odd(x):\n    return x is 'odd'\n",
        "run.py": "import pretrainedmodels.models.dpn\n\nimport mine\n\nprint(mine.odd('e'))\n"})
    assert main(["bundle", str(src / "run.py"), "-o", str(tmp_path / "out.py")]) == 0
    work, temp = empty_dirs(tmp_path)
    done = run_offline(tmp_path / "out.py", work, tmpdir=temp)
    assert (done.returncode, done.stdout) == (0, "False\n"), done.stderr
    assert "dpn.py" not in done.stderr
    assert done.stderr.count("SyntaxWarning") == 1 and "mine.py:2: SyntaxWarning" in done.stderr


def _files_holding(root: Path, secrets: list[bytes]) -> list[str]:
    return [str(path) for path in root.rglob("*") if path.is_file()
            and any(secret in path.read_bytes() for secret in secrets)]


def test_a_private_kernels_key_never_reaches_the_unpack_folder(
        digits_input, ensemble_yml, tmp_path):
    key = os.urandom(32)
    secrets = [key, key.hex().encode()]
    kernel = build_kernel(ensemble_yml, tmp_path / "out", key=key).kernel
    assert embeds_key(kernel)  # the entry, key included, is inside the compressed payload
    work, temp = empty_dirs(tmp_path / "kaggle")
    (tmp_path / "kaggle" / "input").symlink_to(digits_input)
    process = subprocess.Popen([sys.executable, "-I", str(kernel)], cwd=work,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={"PATH": "/usr/bin:/bin", "TMPDIR": str(temp),
                                    "NO_ALBUMENTATIONS_UPDATE": "1"})
    try:
        deadline = time.monotonic() + 60
        while not list(temp.glob("kernelpack-*/six.py")):  # the last file unpacked
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)
        running = process.poll() is None
        while_running = _files_holding(temp, secrets)
        process.send_signal(signal.SIGKILL)  # leaves the unpack folder behind
        process.wait(timeout=30)
    finally:
        process.kill()
    assert running, "the kernel ended before its unpack folder was searched"
    left = sorted(temp.rglob("*"))
    assert any(path.name == "runner.py" for path in left)  # the search had something to see
    assert while_running == [] and _files_holding(temp, secrets) == []
