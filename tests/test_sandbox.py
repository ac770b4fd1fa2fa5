import textwrap
import time

import pytest

from conftest import connection_probe, import_probe
from kernelpack.cli import main
from kernelpack.errors import SandboxError
from kernelpack.kernel.sandbox import network_namespace_available, run_local

NETWORK_MODES = ["guard"] + (["unshare"] if network_namespace_available() else [])


def _kernel(tmp_path, source):
    path = tmp_path / "kernel" / "kernel.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(source))
    (tmp_path / "input").mkdir(exist_ok=True)
    return path


@pytest.mark.parametrize("network", NETWORK_MODES)
def test_the_network_is_cut_even_to_a_server_on_this_machine(tmp_path, listening_port, network):
    kernel = _kernel(tmp_path, connection_probe(listening_port))
    result = run_local(kernel, tmp_path / "input", network=network)
    log = result.log.read_text()
    assert result.returncode == 0, log
    assert "BLOCKED" in log and "CONNECTED" not in log
    # the guard is reported as what it is: the socket module refuses, nothing is cut
    assert result.network.startswith("cut (unshare -n" if network == "unshare" else "NOT cut")


@pytest.mark.slow
def test_the_project_cannot_be_imported_inside(tmp_path):
    kernel = _kernel(tmp_path, import_probe("kernelpack", "inference_core")
                     + "import torch, numpy, PIL  # what a Kaggle image has is still there\n")
    result = run_local(kernel, tmp_path / "input")
    log = result.log.read_text()
    assert result.returncode == 0, log
    assert "MISSING kernelpack" in log and "MISSING inference_core" in log
    assert "IMPORTED" not in log


@pytest.mark.slow
def test_packages_the_image_lacks_come_only_from_the_kernels_own_paths(tmp_path):
    """stickytape and pretrainedmodels are installed here but not on Kaggle: hidden, unless the
    kernel brings its own copy (as a bundle or a wheel dataset does)."""
    own = tmp_path / "input" / "wheels"
    (own / "pretrainedmodels").mkdir(parents=True)
    (own / "pretrainedmodels" / "__init__.py").write_text("ORIGIN = 'kernel'\n")
    kernel = _kernel(tmp_path, import_probe("stickytape", "pretrainedmodels") + textwrap.dedent(f"""
        import importlib.util, sys
        print("PROBE", importlib.util.find_spec("stickytape"))
        sys.path.insert(0, {str(own)!r})
        import pretrainedmodels
        print("OWN COPY", pretrainedmodels.ORIGIN)
        import sklearn.utils  # not imported by the kernel before: a path-based import still works
    """))
    result = run_local(kernel, tmp_path / "input")
    log = result.log.read_text()
    assert result.returncode == 0, log
    assert "MISSING stickytape" in log and "MISSING pretrainedmodels" in log, log
    assert "IMPORTED" not in log
    assert "OWN COPY kernel" in log
    assert "PROBE None" in log          # a probe for an optional package answers as on Kaggle


def test_kaggle_layout_cwd_and_exit_code(tmp_path):
    kernel = _kernel(tmp_path, """
        import os, sys
        assert os.path.basename(os.getcwd()) == "working", os.getcwd()
        assert sorted(os.listdir("../input")) == ["data"], os.listdir("../input")
        open("out.txt", "w").write("hello")
        sys.exit(3)
    """)
    (tmp_path / "input" / "data").mkdir()
    result = run_local(kernel, tmp_path / "input")
    assert result.returncode == 3, result.log.read_text()
    assert [p.name for p in result.outputs] == ["out.txt"]
    assert result.submission is None


@pytest.mark.slow
def test_the_budget_kills_a_kernel_that_overruns(tmp_path, capsys):
    kernel = _kernel(tmp_path, """
        import time
        print("started", flush=True)
        time.sleep(60)
    """)
    result = run_local(kernel, tmp_path / "input", budget=2)
    assert result.timed_out
    assert result.seconds < 20
    assert "started" in result.log.read_text()
    assert result.last_line() == "run-local: kernel stopped at the 2 s budget; it left no " \
                                 "submission.csv"
    # A kernel that wrote its submission before the budget: the line says what it left.
    kernel.write_text('open("submission.csv", "w").write("id,label\\na,1\\nb,2\\n")\n'
                      'import time\ntime.sleep(60)\n')
    assert main(["run-local", str(kernel.parent), "--input", str(tmp_path / "input"),
                 "--budget", "2"]) == 1
    assert capsys.readouterr().err.startswith(
        "kernelpack: kernel stopped at the 2 s budget; it left submission.csv (2 rows, as last "
        "written); sandbox ")


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SandboxError, match="kernel not found; run `kernelpack build"):
        run_local(tmp_path / "nowhere", tmp_path)
    kernel = _kernel(tmp_path, "print('hi')\n")
    with pytest.raises(SandboxError, match="input folder not found"):
        run_local(kernel, tmp_path / "no-input")
    assert main(["run-local", str(kernel.parent), "--input", str(tmp_path / "no-input")]) == 1
    assert "no-input: input folder not found" in capsys.readouterr().err


@pytest.mark.slow
def test_a_daemon_the_kernel_forks_is_stopped_with_it_and_does_not_keep_run_local_waiting(
        tmp_path):
    import threading
    from pathlib import Path

    kernel = _kernel(tmp_path, """
        import os, time
        if os.fork() == 0:          # double fork: the daemon's parent exits at once
            if os.fork() == 0:
                print("daemon", os.getpid(), flush=True)
                time.sleep(600)     # holds the log pipe open
                os._exit(0)
            os._exit(0)
        time.sleep(0.5)
        print("kernel done", flush=True)
    """)
    results = []
    runner = threading.Thread(target=lambda: results.append(run_local(kernel, tmp_path / "input")))
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive(), "run-local still waits on the kernel's daemon"
    log = results[0].log.read_text()
    assert "kernel done" in log
    daemon = int(log.split("daemon ", 1)[1].split()[0])
    time.sleep(0.5)
    status = Path(f"/proc/{daemon}/status")  # stopped with the kernel: gone, or a zombie
    assert not status.exists() or "State:\tZ" in status.read_text()


def test_python_runs_the_kernel_with_another_interpreter_still_offline_and_hiding_the_project(
        tmp_path, listening_port, capsys):
    from bundle_helpers import python312

    other = python312()
    if other is None:
        pytest.skip("no Python 3.12 here (pyenv has it on the CI machine)")
    kernel = _kernel(tmp_path, import_probe("kernelpack") + connection_probe(listening_port)
                     + "import sys\nprint('VERSION', sys.version_info[:2])\n"
                       "open('submission.csv', 'w').write('id,label\\na,1\\n')\n")
    result = run_local(kernel, tmp_path / "input", python=other)
    log = result.log.read_text()
    assert result.returncode == 0, log
    assert "VERSION (3, 12)" in log and "MISSING kernelpack" in log
    assert "BLOCKED" in log and "CONNECTED" not in log
    assert result.python.startswith(f"{other} (Python 3.12.") and result.python.endswith(")")
    assert main(["run-local", str(kernel.parent), "--input", str(tmp_path / "input"),
                 "--python", other]) == 0
    assert f"kernel run by {other} (Python 3.12." in capsys.readouterr().out


def test_python_that_does_not_run_or_a_notebook_is_a_clear_error(tmp_path, capsys):
    kernel = _kernel(tmp_path, "print('hi')\n")
    not_python = tmp_path / "python"
    not_python.write_text("#!/bin/sh\necho nope\nexit 3\n")
    not_python.chmod(0o755)
    for python, problem in ((tmp_path / "nowhere", "does not run"),
                            (not_python, "is not a working Python interpreter (exit 3: nope)")):
        assert main(["run-local", str(kernel.parent), "--input", str(tmp_path / "input"),
                     "--python", str(python)]) == 1
        err = capsys.readouterr().err
        assert f"--python {python}: {problem}" in err and len(err.splitlines()) == 1
    notebook = tmp_path / "nb" / "kernel.ipynb"
    notebook.parent.mkdir()
    notebook.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    with pytest.raises(SandboxError, match=r"runs script kernels; kernel\.ipynb is a notebook"):
        run_local(notebook, tmp_path / "input", python=not_python)
