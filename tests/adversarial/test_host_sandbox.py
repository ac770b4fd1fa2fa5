"""run-local never destroys what it did not make, never leaves its kernel running, and refuses a
budget that is not a positive finite number; TMPDIR inside the working folder is one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_run import assert_one_line_error, kernelpack

from kernelpack.bundler.bundle import Entry, bundle
from kernelpack.errors import SandboxError
from kernelpack.kernel.sandbox import SANDBOX_MARKER, run_local

# A kernel that says where it runs, writes a submission, and (with SLEEP) waits to be killed.
KERNEL = """\
import os, time
open("pid", "w").write(str(os.getpid()))
open("submission.csv", "w").write("id,label\\n")
print("running", flush=True)
time.sleep({sleep})
"""


def _kernel(folder: Path, sleep: float = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.py").write_text(KERNEL.format(sleep=sleep))
    return folder


def _input(folder: Path) -> Path:
    (folder / "comp").mkdir(parents=True)
    (folder / "comp" / "labels.csv").write_text("id,label\na,1\n")
    return folder


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_root_refuses_a_non_empty_folder_it_did_not_make(tmp_path):
    kernel, inputs = _kernel(tmp_path / "k"), _input(tmp_path / "input")
    mine = tmp_path / "my-results"
    (mine / "sub").mkdir(parents=True)
    (mine / "sub" / "model.pt").write_bytes(b"a week of training")
    before = _tree(mine)
    done = kernelpack("run-local", kernel, "--input", inputs, "--root", mine)
    assert_one_line_error(done, f"--root {mine}", "not empty", SANDBOX_MARKER)
    assert _tree(mine) == before
    file_root = tmp_path / "a-file"
    file_root.write_text("keep")
    assert_one_line_error(kernelpack("run-local", kernel, "--input", inputs, "--root", file_root),
                          "not a folder")
    assert file_root.read_text() == "keep"


@pytest.mark.parametrize("where", ["equal", "inside", "containing"])
def test_root_refuses_any_overlap_with_the_input(tmp_path, where):
    kernel, inputs = _kernel(tmp_path / "k"), _input(tmp_path / "work" / "input")
    root = {"equal": inputs, "inside": inputs / "comp" / "sandbox",
            "containing": tmp_path / "work"}[where]
    before = _tree(inputs)
    done = kernelpack("run-local", kernel, "--input", inputs, "--root", root)
    assert_one_line_error(done, "overlaps --input")
    assert _tree(inputs) == before
    assert not (inputs / "comp" / "sandbox").exists()


def test_root_refuses_to_hold_the_kernel_itself(tmp_path):
    kernel, inputs = _kernel(tmp_path / "out"), _input(tmp_path / "input")
    done = kernelpack("run-local", kernel, "--input", inputs, "--root", tmp_path / "out")
    assert_one_line_error(done, "overlaps kernel")
    assert (tmp_path / "out" / "kernel.py").is_file()


def test_a_root_it_made_is_marked_and_reused_and_an_empty_one_is_taken(tmp_path):
    kernel, inputs = _kernel(tmp_path / "k"), _input(tmp_path / "input")
    empty = tmp_path / "empty"
    empty.mkdir()
    first = run_local(kernel, inputs, root=empty, network="guard")
    assert first.returncode == 0 and first.submission is not None
    assert (empty / SANDBOX_MARKER).is_file()
    (empty / "working" / "stale.txt").write_text("from the last run")
    again = run_local(kernel, inputs, root=empty, network="guard")
    assert again.returncode == 0 and not (empty / "working" / "stale.txt").exists()
    assert _tree(inputs) == {"comp/labels.csv": b"id,label\na,1\n"}


@pytest.mark.parametrize("budget", ["nan", "inf", "-inf", "-5", "0", "1e400", "soon"])
def test_a_budget_that_is_not_a_positive_finite_number_is_refused(tmp_path, budget):
    kernel, inputs = _kernel(tmp_path / "k"), _input(tmp_path / "input")
    done = kernelpack("run-local", kernel, "--input", inputs, "--budget", budget)
    assert_one_line_error(done, "argument --budget", code=2)
    assert not (kernel / "sandbox").exists()
    for value in (float("nan"), float("inf"), -1.0):
        with pytest.raises(SandboxError, match="positive, finite"):
            run_local(kernel, inputs, budget=value)
    assert not (kernel / "sandbox").exists()


def _gone(pid: int) -> bool:
    """No such process, or a zombie no one has reaped yet (it runs no more)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" in status.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True


def _start_run_local(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    kernel, inputs = _kernel(tmp_path / "k", sleep=120), _input(tmp_path / "input")
    process = subprocess.Popen(
        [sys.executable, "-m", "kernelpack", "run-local", str(kernel), "--input", str(inputs),
         "--network", "guard"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    pid_file = kernel / "sandbox" / "working" / "pid"
    deadline = time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text()):
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.05)
    return process, int(pid_file.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL])
def test_stopping_run_local_stops_its_kernel(tmp_path, stop):
    process, kernel_pid = _start_run_local(tmp_path)
    assert not _gone(kernel_pid)
    process.send_signal(stop)
    _, err = process.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while not _gone(kernel_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(kernel_pid), f"kernel {kernel_pid} still runs after {stop.name}"
    if stop != signal.SIGKILL:
        assert process.returncode in (1, 130), (process.returncode, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert "the kernel was stopped" in err


def test_tmpdir_inside_the_working_folder(tmp_path, monkeypatch):
    kernel, inputs = _kernel(tmp_path / "k"), _input(tmp_path / "input")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", ".")
    assert kernelpack("run-local", kernel, "--input", inputs).code == 0  # its own TMPDIR
    # A bundled kernel run by hand with TMPDIR=. refuses in one line (Kaggle publishes ./).
    script = tmp_path / "bundled.py"
    script.write_text(bundle(Entry("main.py", b"print('hello')\n")).text)
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run([sys.executable, "-I", str(script)], cwd=work, capture_output=True,
                          text=True, env={**os.environ, "TMPDIR": "."}, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "kernelpack: the temporary directory is inside the working directory, which Kaggle "
        "publishes; unset TMPDIR or point it elsewhere (e.g. /tmp)"]
    assert list(work.iterdir()) == []


def test_a_damaged_kernel_config_with_test_dir_is_one_line(tmp_path):
    kernel, inputs = _kernel(tmp_path / "k"), _input(tmp_path / "input")
    (tmp_path / "swap").mkdir()
    for text in ("{not json", '{"test": {"images": "x"}}', "[]"):
        (kernel / "kernel-config.json").write_text(text)
        done = kernelpack("run-local", kernel, "--input", inputs, "--test-dir", tmp_path / "swap")
        assert_one_line_error(done, "kernel-config.json", "rebuild the kernel")
        assert not (kernel / "sandbox").exists()
