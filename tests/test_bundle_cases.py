"""Issue 3's cases: each fixture package is bundled with `kernelpack bundle`, then run the way
Kaggle runs a kernel (a fresh `python -I`, an empty working directory, the network cut)."""

import subprocess
import sys

import pytest
from bundle_cases import CASES, build_fixture, interpreter, ours_args, stickytape_outcome
from bundle_helpers import empty_dirs, run_offline

from kernelpack.cli import main

RUNS = [case for case in CASES if case.expected]
REFUSED = [case for case in CASES if case.refused]


def _cli(case, src, out, capsys):
    paths, include = ours_args(case, src)
    argv = ["bundle", str(src / case.entry), "-o", str(out)]
    argv += [f"--path={path}" for path in paths] + [f"--include={name}" for name in include]
    code = main(argv)
    return code, capsys.readouterr()


@pytest.mark.parametrize("case", RUNS, ids=[case.name for case in RUNS])
def test_the_bundled_case_prints_what_the_sources_print(case, tmp_path, capsys):
    if interpreter(case) is None:
        pytest.skip("no Python 3.12 interpreter on this machine")
    src = build_fixture(case, tmp_path)
    code, printed = _cli(case, src, tmp_path / "out.py", capsys)
    assert code == 0, printed.err
    assert printed.out.startswith(f"wrote {tmp_path / 'out.py'} (")
    work, temp = empty_dirs(tmp_path)
    done = run_offline(tmp_path / "out.py", work, interpreter(case), temp)
    assert (done.returncode, done.stdout) == (0, case.expected), done.stderr
    assert list(work.iterdir()) == [] and list(temp.iterdir()) == []


@pytest.mark.parametrize("case", REFUSED, ids=[case.name for case in REFUSED])
def test_what_cannot_be_inlined_is_refused_in_one_line_with_the_fix(case, tmp_path, capsys):
    src = build_fixture(case, tmp_path)
    unbundled = subprocess.run([sys.executable, case.entry], cwd=src, capture_output=True,
                               text=True, timeout=60)
    assert unbundled.returncode == 0, unbundled.stderr  # a real, loadable extension
    code, printed = _cli(case, src, tmp_path / "out.py", capsys)
    assert code == 1
    assert printed.err.count("\n") == 1 and case.refused in printed.err
    assert "Kaggle dataset" in printed.err and "--exclude fastmath" in printed.err
    assert not (tmp_path / "out.py").exists()


def test_a_dynamic_import_needs_include(tmp_path, capsys):
    case = next(case for case in CASES if case.name == "dynamic_import")
    src = build_fixture(case, tmp_path)
    assert main(["bundle", str(src / case.entry), "-o", str(tmp_path / "out.py"),
                 "--path", str(src / "extra")]) == 0
    work, temp = empty_dirs(tmp_path)
    done = run_offline(tmp_path / "out.py", work, tmpdir=temp)
    assert done.returncode == 1
    assert "ModuleNotFoundError: No module named 'fastplug'" in done.stderr


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_plain_stickytape_fails_where_the_docs_table_says(case, tmp_path):
    if interpreter(case) is None:
        pytest.skip("no Python 3.12 interpreter on this machine")
    result = stickytape_outcome(case, tmp_path)
    assert (result != "pass") == bool(case.stickytape_fails), result
