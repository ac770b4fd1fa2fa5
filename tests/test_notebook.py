"""Notebook kernels: `build --notebook` writes a valid kernel.ipynb holding the same bundle as
kernel.py; run-local and the local Kaggle service execute notebooks in a real Jupyter kernel,
offline, keep the executed notebook, and report a failed cell in one line; the real kaggle client
pushes, pulls and submits a notebook kernel.

Each run starts a Jupyter kernel (about a second); the hand-made notebooks import no torch."""

import csv
import json

import nbformat
import pytest
from kaggle_helpers import PREDICT_ONES, USER, kaggle_world, write_files
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from conftest import connection_probe, import_probe
from kernelpack.cli import main
from kernelpack.errors import BuildError
from kernelpack.kaggle.service import add_competition
from kernelpack.kernel.build import build_kernel, embeds_key
from kernelpack.kernel.sandbox import network_namespace_available, run_local
from kernelpack.metadata import KERNEL_METADATA, title_of

NETWORK_MODES = ["guard"] + (["unshare"] if network_namespace_available() else [])


def _notebook_kernel(folder, slug, *sources, **metadata):
    """A kernel folder holding a hand-made notebook: a markdown cell, then one code cell per
    source."""
    folder.mkdir(parents=True, exist_ok=True)
    notebook = new_notebook(cells=[new_markdown_cell(f"# {slug}"),
                                   *map(new_code_cell, sources)],
                            metadata={"kernelspec": {"name": "python3", "language": "python",
                                                     "display_name": "Python 3"}})
    nbformat.write(notebook, folder / "kernel.ipynb")
    (folder / KERNEL_METADATA).write_text(json.dumps({
        "id": f"{USER}/{slug}", "title": title_of(slug), "code_file": "kernel.ipynb",
        "language": "python", "kernel_type": "notebook", "is_private": True,
        "enable_internet": False, **metadata}))
    return folder


def _outputs(notebook_path, index):
    """The text a code cell of an executed notebook printed."""
    cell = nbformat.read(notebook_path, as_version=4).cells[index]
    return "".join(output.get("text", "") for output in cell.outputs)


def test_build_notebook_is_a_valid_notebook_holding_the_script_kernel(ensemble_yml, tmp_path):
    script = build_kernel(ensemble_yml, tmp_path / "script")
    built = build_kernel(ensemble_yml, tmp_path / "nb", notebook=True)

    assert built.kernel == tmp_path / "nb" / "kernel.ipynb"
    notebook = nbformat.read(built.kernel, as_version=4)
    nbformat.validate(notebook)
    markdown, code = notebook.cells
    assert markdown.cell_type == "markdown" and code.cell_type == "code"
    assert "kernelpack" in markdown.source and "`ensemble.yml`" in markdown.source
    assert "`cnn_f0`, `cnn_f1`" in markdown.source and "gmean" in markdown.source
    assert code.source == script.kernel.read_text()          # the same bundle, in one cell
    assert notebook.metadata.kernelspec.name == "python3"
    metadata = json.loads(built.metadata.read_text())
    assert (metadata["kernel_type"], metadata["code_file"]) == ("notebook", "kernel.ipynb")
    assert not (tmp_path / "nb" / "kernel.py").exists()
    assert not embeds_key(built.kernel)

    # With a key the notebook says so, and the push check finds it in the code cell.
    keyed = build_kernel(ensemble_yml, tmp_path / "nb", key=bytes(range(32)), notebook=True)
    assert embeds_key(keyed.kernel)
    assert "embeds a decryption key" in nbformat.read(keyed.kernel, as_version=4).cells[0].source
    # Building a script into the folder replaces kernelpack's notebook, not someone else's.
    build_kernel(ensemble_yml, tmp_path / "nb")
    assert not keyed.kernel.exists()
    assert json.loads(built.metadata.read_text())["kernel_type"] == "script"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "kernel.ipynb").write_text(nbformat.writes(new_notebook()))
    with pytest.raises(BuildError, match="was not written by kernelpack"):
        build_kernel(ensemble_yml, tmp_path / "mine", notebook=True)


@pytest.mark.slow
@pytest.mark.parametrize("network", NETWORK_MODES)
def test_run_local_runs_a_notebook_offline_and_reports_its_failed_cell(
        tmp_path, listening_port, network, capsys):
    write_files(tmp_path / "input" / "comp", {"data.txt": b"42"})
    kernel = _notebook_kernel(tmp_path / "k", "failing", """\
import os
print("cwd", os.path.basename(os.getcwd()), open("../input/comp/data.txt").read())
""" + import_probe("kernelpack", "inference_core") + """\
import numpy, IPython   # what the Kaggle image has is still there
""" + connection_probe(listening_port) + """\
open("partial.csv", "w").write("id\\n")
""", "x = 1", "raise ValueError('bad threshold ' + str(x))")

    code = main(["run-local", str(kernel), "--input", str(tmp_path / "input"),
                 "--network", network])
    out, err = capsys.readouterr()
    assert code == 1
    failure = "notebook cell 4 failed: ValueError: bad threshold 1"
    assert f"exited with code 1 ({failure});" in err
    result_root = kernel / "sandbox"
    log = (result_root / "kernel.log").read_text()
    assert log.strip().splitlines()[-1] == failure
    assert "  | cwd working 42" in out                        # streamed as it came
    assert "MISSING kernelpack" in log and "MISSING inference_core" in log
    assert "IMPORTED" not in log and "BLOCKED" in log and "CONNECTED" not in log
    assert (result_root / "working" / "partial.csv").read_text() == "id\n"
    executed = result_root / "notebook" / "kernel.ipynb"
    assert "cwd working 42" in _outputs(executed, 1)
    [error] = nbformat.read(executed, as_version=4).cells[3].outputs
    assert (error.ename, error.evalue) == ("ValueError", "bad threshold 1")


@pytest.mark.slow
def test_a_notebook_killed_at_its_budget_keeps_the_cells_that_ran(tmp_path):
    (tmp_path / "input").mkdir()
    kernel = _notebook_kernel(tmp_path / "k", "slow", "print('first cell done')",
                              "import time\ntime.sleep(120)")
    result = run_local(kernel, tmp_path / "input", budget=6)
    assert result.timed_out
    assert _outputs(result.notebook, 1) == "first cell done\n"
    assert nbformat.read(result.notebook, as_version=4).cells[2].outputs == []


@pytest.mark.slow
def test_run_local_runs_a_built_notebook_and_writes_the_submission(
        ensemble_yml, digits_input, tmp_path, capsys):
    """A real kernel (torch, the bundled runtime) in a Jupyter kernel."""
    build_kernel(ensemble_yml, tmp_path / "out", notebook=True)
    code = main(["run-local", "-p", str(tmp_path / "out"), "--input", str(digits_input)])
    out, _ = capsys.readouterr()
    assert code == 0, out
    sandbox = tmp_path / "out" / "sandbox"
    executed = sandbox / "notebook" / "kernel.ipynb"
    assert f"executed notebook {executed}" in out
    with open(sandbox / "working" / "submission.csv") as written, \
            open(digits_input / "digits" / "sample_submission.csv") as sample:
        rows = list(csv.DictReader(written))
        assert [row["id"] for row in rows] == [row["id"] for row in csv.DictReader(sample)]
    assert all(row["label"] in set("0123456789") for row in rows)
    assert "wrote submission.csv" in _outputs(executed, 1)
    # Progress is text in the log, as Kaggle's log viewer shows it: no widget, no widget warning.
    log = (sandbox / "kernel.log").read_text()
    assert "IProgress" not in log and "widget" not in log.lower(), log


@pytest.fixture
def world(tmp_path, monkeypatch):
    yield from kaggle_world(tmp_path, monkeypatch)


@pytest.mark.slow
def test_kaggle_client_pushes_a_notebook_that_runs_and_is_submitted(world, tmp_path):
    data = write_files(tmp_path / "comp" / "data", {"sample_submission.csv": b"id,label\na,0\n"})
    hidden = write_files(tmp_path / "comp" / "hidden",
                         {"sample_submission.csv": b"id,label\na,0\nb,0\n"})
    (tmp_path / "comp" / "solution.csv").write_text("id,label,Usage\na,1,Public\nb,0,Private\n")
    add_competition(world.root, "tinycomp", data, tmp_path / "comp" / "solution.csv", hidden)
    cells = PREDICT_ONES.split('ids = ')
    kernel = _notebook_kernel(tmp_path / "k", "nb-kernel", cells[0], "ids = " + cells[1],
                              competition_sources=["tinycomp"])

    pushed = world.kaggle("kernels", "push", "-p", str(kernel))
    assert "version 1 successfully pushed" in pushed.stdout, pushed
    world.service.runner.wait_idle()
    status = world.kernelpack("kernel", "status", f"{USER}/nb-kernel")
    assert status.stdout == f"{USER}/nb-kernel: COMPLETE\n", status

    out = tmp_path / "out"
    assert world.kaggle("kernels", "output", f"{USER}/nb-kernel", "-p", str(out)).returncode == 0
    assert (out / "submission.csv").read_text() == "id,label\na,1\n"
    assert "wrote 1 rows" in _outputs(out / "nb-kernel.ipynb", 2)   # the executed notebook
    log = "".join(record["data"] for record in json.loads((out / "nb-kernel.log").read_text()))
    assert "inputs: ['tinycomp']\nwrote 1 rows\n" in log
    pulled = world.kaggle("kernels", "pull", f"{USER}/nb-kernel", "-p", str(tmp_path / "pull"))
    assert pulled.returncode == 0, pulled
    sources = [cell.source for cell in
               nbformat.read(tmp_path / "pull" / "nb-kernel.ipynb", as_version=4).cells]
    assert sources == ["# nb-kernel", cells[0], "ids = " + cells[1]]

    submitted = world.kernelpack("submit", "tinycomp", "--kernel", f"{USER}/nb-kernel", "--wait")
    assert submitted.returncode == 0, submitted
    assert "scored 1.00000 public, 0.00000 private" in submitted.stdout   # the rerun saw a, b
    rerun = world.stored("submissions", "1", "run")
    assert (rerun / "working" / "submission.csv").read_text() == "id,label\na,1\nb,1\n"
    assert "wrote 2 rows" in _outputs(rerun / "notebook" / "kernel.ipynb", 2)


@pytest.mark.slow
def test_a_failing_notebook_is_an_error_naming_its_cell(world, tmp_path):
    kernel = _notebook_kernel(tmp_path / "k", "broken", "print('start')",
                              "import sys\nprint('kernel error: no model found', file=sys.stderr)"
                              "\nsys.exit(1)")
    assert world.kernelpack("kernel", "push", str(kernel)).returncode == 0
    world.service.runner.wait_idle()
    status = world.kernelpack("kernel", "status", f"{USER}/broken")
    assert status.returncode == 1
    assert status.stdout == (f"{USER}/broken: ERROR (the kernel exited with code 1: notebook "
                             "cell 3 failed: kernel error: no model found)\n")
    # What the real service says of a notebook that is not one.
    (kernel / "kernel.ipynb").write_text('{"cells": "none"}')
    refused = world.kaggle("kernels", "push", "-p", str(kernel))
    assert "not valid notebook JSON" in refused.stdout + refused.stderr, refused


@pytest.mark.parametrize("text, problem", [
    ("not json", "Notebook does not appear to be JSON"),
    ("", "Notebook does not appear to be JSON"),
    ("[]", "'list' object has no attribute 'get'"),
    ('{"cells": [{"cell_type": "code", "source": 5, "metadata": {}, "outputs": [], '
     '"execution_count": null}], "nbformat": 4, "nbformat_minor": 5, "metadata": {}}',
     "5 is not valid under any of the given schemas"),
])
def test_run_local_refuses_a_notebook_jupyter_cannot_run_in_one_line(tmp_path, capsys, text,
                                                                     problem):
    from kernelpack.cli import main

    kernel = tmp_path / "kernel.ipynb"
    kernel.write_text(text)
    (tmp_path / "input").mkdir()
    assert main(["run-local", str(kernel), "--input", str(tmp_path / "input")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a notebook Jupyter can run (" in err and problem in err
    assert not (tmp_path / "sandbox").exists()  # refused before any sandbox was laid out
