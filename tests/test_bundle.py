import subprocess
import sys
from pathlib import Path

import pytest
from bundle_helpers import empty_dirs, python312, run_offline, write_tree

from kernelpack.bundler.bundle import Entry, bundle, read_entry, write_bundle
from kernelpack.bundler.locate import MAX_FILE_BYTES, files_of, find_installed
from kernelpack.errors import BundleError
from kernelpack.kernel.build import KEY_MARKER

INTERPRETERS = [sys.executable] + ([python312()] if python312() else [])

GREETER = {
    "greeter/__init__.py": "from .sub.words import hello\n",
    "greeter/sub/__init__.py": "",
    "greeter/sub/words.py": "def hello(name):\n    return f'hello {name}'\n\n\n"
                            "def fail():\n    raise KeyError('boom')\n",
    "greeter/greeting.txt": "hello",
}


def _script(tmp_path: Path, entry: str, files=GREETER, name="out.py") -> Path:
    src = write_tree(tmp_path / "src", {**files, "entry.py": entry})
    write_bundle(src / "entry.py", tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_bundle_runs_under_each_python_passes_the_exit_code_and_cleans_up(tmp_path, interpreter):
    script = _script(tmp_path, "import sys\nfrom greeter import hello\nprint(hello('kaggle'))\n"
                               "sys.exit(7)\n")
    work, temp = empty_dirs(tmp_path)
    done = run_offline(script, work, interpreter, temp)
    assert done.stdout == "hello kaggle\n", done.stderr
    assert done.returncode == 7
    assert list(work.iterdir()) == [] and list(temp.iterdir()) == []


def test_tracebacks_show_the_bundled_module_its_line_and_source(tmp_path):
    script = _script(tmp_path, "from greeter.sub.words import fail\nfail()\n")
    work, temp = empty_dirs(tmp_path)
    done = run_offline(script, work, tmpdir=temp)
    assert done.returncode == 1
    assert "greeter/sub/words.py\", line 6, in fail\n    raise KeyError('boom')" in done.stderr
    assert "entry.py\", line 2, in <module>\n    fail()" in done.stderr
    assert done.stderr.rstrip().endswith("KeyError: 'boom'")
    assert list(temp.iterdir()) == []  # removed at exit, after the traceback was printed


def test_identical_inputs_give_byte_identical_bundles_wherever_the_sources_lie(tmp_path):
    entry = "from greeter import hello\nprint(hello('x'))\n"
    first = _script(tmp_path / "a", entry).read_bytes()
    second = _script(tmp_path / "b", entry).read_bytes()
    assert first == second
    changed = {**GREETER, "greeter/greeting.txt": "hi"}
    assert _script(tmp_path / "c", entry, changed).read_bytes() != first


def test_runs_when_exec_d_as_a_notebook_cell_twice_in_one_interpreter(tmp_path):
    script = _script(tmp_path, "from greeter import hello\nprint(hello('cell'), '__file__' in "
                               "globals())\n")
    work, temp = empty_dirs(tmp_path)
    cell = (f"text = open({str(script)!r}).read()\n"
            "for run in range(2):\n    exec(compile(text, '<cell>', 'exec'), "
            "{'__name__': '__main__'})\n")
    done = subprocess.run([sys.executable, "-I", "-c", cell], cwd=work, capture_output=True,
                          text=True, timeout=60, env={"TMPDIR": str(temp)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello cell True\n" * 2
    assert list(temp.iterdir()) == [] and list(work.iterdir()) == []


def test_unpacks_into_a_private_temporary_directory_never_the_working_one(tmp_path):
    script = _script(tmp_path, "import os\nimport greeter\nhome = os.path.dirname(os.path."
                               "dirname(greeter.__file__))\nprint(home)\n"
                               "print(oct(os.stat(home).st_mode & 0o777))\n")
    work, temp = empty_dirs(tmp_path)
    done = run_offline(script, work, tmpdir=temp)
    home, mode = done.stdout.split()
    assert Path(home).parent == temp and Path(home).name.startswith("kernelpack-")
    assert mode == "0o700"
    (work / "tmp").mkdir()
    refused = run_offline(script, work, tmpdir=work / "tmp")  # inside the published folder
    assert refused.returncode == 1
    assert "the temporary directory is inside the working directory" in refused.stderr
    assert list((work / "tmp").iterdir()) == []


def test_a_leading_comment_line_such_as_the_key_marker_is_tolerated(tmp_path):
    script = _script(tmp_path, "from greeter import hello\nprint(hello('marked'))\n")
    script.write_text(f"{KEY_MARKER}\n{script.read_text()}")
    work, temp = empty_dirs(tmp_path)
    assert run_offline(script, work, tmpdir=temp).stdout == "hello marked\n"


def test_fallback_imports_are_not_vendored_but_plain_ones_are(tmp_path):
    optional = bundle(Entry("e.py", b"try:\n    import six\nexcept ImportError:\n    six = None\n"))
    assert optional.vendored == () and optional.missing == ()
    plain = bundle(Entry("e.py", b"def late():\n    import six\n"))
    assert plain.vendored == ("six",) and "six.py" in plain.files


def test_a_relative_import_in_a_script_outside_a_package_names_the_fix(tmp_path):
    src = write_tree(tmp_path, {"tool.py": "import os\nfrom .helpers import x\n",
                                "helpers.py": "x = 1\n"})
    with pytest.raises(BundleError, match=r"tool.py:2: relative import .*add an __init__.py"):
        write_bundle(src / "tool.py", tmp_path / "out.py")
    (src / "__init__.py").write_text("")
    entry = read_entry(src / "tool.py")
    assert (entry.path, entry.module) == (f"{src.name}/tool.py", f"{src.name}.tool")


def test_a_top_level_module_named_like_the_stdlib_is_refused(tmp_path):
    src = write_tree(tmp_path, {"run.py": "import logging\n", "logging.py": "x = 1\n"})
    with pytest.raises(BundleError, match=r"logging.py: named like the standard library module "
                                          r"'logging' \(imported at run.py:1\)"):
        write_bundle(src / "run.py", tmp_path / "out.py")


def test_bad_options_are_refused_with_the_fix(tmp_path):
    src = write_tree(tmp_path, {**GREETER, "run.py": "import greeter\n"})
    with pytest.raises(BundleError, match=r"--include greeter.nope: package greeter has no module"):
        write_bundle(src / "run.py", tmp_path / "out.py", include=["greeter.nope"])
    with pytest.raises(BundleError, match="--include json: json is the standard library"):
        write_bundle(src / "run.py", tmp_path / "out.py", include=["json"])
    with pytest.raises(BundleError, match="--vendor json: name an installed top-level package"):
        write_bundle(src / "run.py", tmp_path / "out.py", vendor=["json"])
    with pytest.raises(BundleError, match=r"--path .*nowhere: not a folder"):
        write_bundle(src / "run.py", tmp_path / "out.py", [tmp_path / "nowhere"])
    with pytest.raises(BundleError, match="entry script not found"):
        write_bundle(src / "missing.py", tmp_path / "out.py")
    assert not (tmp_path / "out.py").exists()


def test_a_data_file_too_big_for_a_kernel_is_refused(tmp_path):
    src = write_tree(tmp_path, {**GREETER, "run.py": "import greeter\n",
                                "greeter/weights.bin": b"\0" * (MAX_FILE_BYTES + 1)})
    with pytest.raises(BundleError, match=r"weights.bin: 1.0 MiB is too big .* Kaggle dataset"):
        write_bundle(src / "run.py", tmp_path / "out.py")


@pytest.mark.skipif(len(INTERPRETERS) < 2, reason="no Python 3.12 interpreter on this machine")
def test_the_runtime_compiles_under_python_312(tmp_path):
    # torch has no 3.12 wheel on this machine, so 3.12 checks syntax and the stdlib bootstrap.
    write_tree(tmp_path, dict(files_of(find_installed("inference_core"))))
    done = subprocess.run([INTERPRETERS[1], "-m", "compileall", "-q", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
