"""The programs kernelpack writes out as text, tested as the modules they are: the payload format
(written by bundler/payload.py, read by the bootstrap's own reader), the bootstrap's unpacking,
the sandbox's boot code, the notebook runner, and the filling in of their marked lines."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
from importlib.machinery import PathFinder

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from kernelpack import read_template
from kernelpack.bundler.bundle import GENERATED, Entry, bundle
from kernelpack.bundler.payload import (
    DAMAGED,
    decode_payload,
    encode_payload,
    payload_pieces,
    payload_tuple,
)
from kernelpack.kernel.sandbox import boot_program
from kernelpack.templates import (
    FILL_MARKER,
    TemplateError,
    fill,
    fill_template,
    notebook_runner,
    sandbox_boot,
)
from kernelpack.templates import bundle_bootstrap as bootstrap

FILES = {
    "pkg/__init__.py": b"",                         # an empty file
    "pkg/données/été.py": "NAME = 'été'\n".encode(),  # a non-ASCII path and content
    "pkg/weights.bin": bytes(range(256)) * 5,        # binary, every byte value
    "main.py": b"import pkg\n",
}


def test_the_payload_round_trips_every_file_byte_for_byte_through_the_script_text():
    text = f"print('before')\n_KP_PAYLOAD = {payload_tuple(FILES)}\nprint('after')\n"
    pieces = payload_pieces(text)
    assert "".join(pieces) == encode_payload(FILES)
    assert decode_payload(pieces) == FILES
    # The bootstrap reads the very literal the script holds, as the kernel does.
    assert dict(bootstrap._kp_payload_files(eval(payload_tuple(FILES)))) == FILES


def test_the_payload_is_deterministic_and_its_lines_are_short():
    assert encode_payload(FILES) == encode_payload(dict(reversed(FILES.items())))
    assert max(map(len, payload_tuple(FILES).splitlines())) <= 4 + 96 + 2


def test_a_script_without_a_payload_has_no_pieces_and_a_damaged_one_does_not_decode():
    assert payload_pieces("print('plain script')\n") is None
    assert payload_pieces("_KP_PAYLOAD = ('AAAA',)\n") is None   # not the written layout
    with pytest.raises(DAMAGED):
        decode_payload(["AAAA"])
    good = encode_payload(FILES)
    with pytest.raises(DAMAGED):
        decode_payload([good[:len(good) // 2]])               # truncated


def test_unpack_writes_each_file_into_a_private_folder_and_keeps_a_script_entry_in_memory(
        tmp_path, monkeypatch):
    work, temp = tmp_path / "working", tmp_path / "temp"
    work.mkdir()
    temp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    root, source = bootstrap._kp_unpack(payload_pieces(
        f"_KP_PAYLOAD = {payload_tuple(FILES)}\n"), "main.py", False)
    assert os.path.dirname(root) == str(temp) and oct(os.stat(root).st_mode & 0o777) == "0o700"
    assert source == FILES["main.py"]
    written = {os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
               for folder, _, names in os.walk(root) for name in names}
    assert written == set(FILES) - {"main.py"}
    with open(os.path.join(root, "pkg", "données", "été.py"), "rb") as handle:
        assert handle.read() == FILES["pkg/données/été.py"]
    assert os.path.getsize(os.path.join(root, "pkg", "__init__.py")) == 0
    assert list(work.iterdir()) == []


def test_unpack_refuses_a_temporary_folder_inside_the_working_directory(tmp_path, monkeypatch):
    inside = tmp_path / "tmp"
    inside.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(inside))
    with pytest.raises(SystemExit, match="temporary directory is inside the working directory"):
        bootstrap._kp_unpack([encode_payload(FILES)], "main.py", False)
    assert list(inside.iterdir()) == []


def test_a_bundle_is_the_filled_bootstrap_with_its_header_first_and_its_run_last():
    text = bundle(Entry("main.py", b"#!/usr/bin/env python\nprint('hi')\n")).text
    lines = text.splitlines()
    assert lines[0] == "#!/usr/bin/env python"
    assert lines[1] == f"{GENERATED}main.py; do not edit: rebuild it with kernelpack."
    assert lines[-1] == "_kp_run()" and FILL_MARKER not in text
    assert "_KP_ENTRY = ('main.py', None, False)" in lines
    assert decode_payload(payload_pieces(text)) == {"main.py": b"#!/usr/bin/env python\n"
                                                    b"print('hi')\n"}


def test_filling_replaces_each_marked_line_and_refuses_a_template_that_lost_a_marker():
    values = {"CONFIG": "json.loads('{\"a\": 1}')", "KEY": "bytes.fromhex('00ff')",
              "USER_CODE": "['mine']"}
    entry = fill_template("kernel_entry.py", values)
    assert "KEY = bytes.fromhex('00ff')" in entry.splitlines()
    assert "USER_CODE = ['mine']" in entry.splitlines() and FILL_MARKER not in entry
    compile(entry, "kernel_entry.py", "exec")
    with pytest.raises(TemplateError, match=r"no assignment `KEY = \.\.\.  # kernelpack: fill`"):
        fill(entry, {"KEY": "None"}, "templates/kernel_entry.py")  # filled: no marker is left
    template = read_template("kernel_entry.py")
    edited = template.replace(f"KEY = None  {FILL_MARKER}", "KEY = None")
    with pytest.raises(TemplateError, match=r"templates/kernel_entry\.py: no assignment `KEY"):
        fill(edited, values, "templates/kernel_entry.py")
    with pytest.raises(TemplateError, match="USER_CODE is marked to be filled in, but"):
        fill(template, {"CONFIG": "{}", "KEY": "None"}, "templates/kernel_entry.py")
    twice = template + f"\nKEY = None  {FILL_MARKER}\n"
    with pytest.raises(TemplateError, match="KEY is marked to be filled in more than once"):
        fill(twice, values, "templates/kernel_entry.py")


def test_the_boot_hook_hides_a_name_from_this_installation_but_not_from_the_kernels_paths(
        tmp_path, monkeypatch):
    hidden = frozenset({"yaml"})
    assert PathFinder.find_spec("yaml") is not None           # installed here
    assert sandbox_boot.HostHidden(PathFinder, hidden).find_spec("yaml") is None
    assert sandbox_boot.HostHidden(PathFinder, hidden).find_spec("json") is not None
    own = sandbox_boot.KernelOwnPaths(hidden, frozenset(sys.path))
    assert own.find_spec("yaml") is None
    (tmp_path / "yaml.py").write_text("KERNELS = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))                # a path the kernel adds
    assert own.find_spec("yaml").origin == str(tmp_path / "yaml.py")


def test_the_boot_program_hides_cuts_the_network_and_runs_the_script(tmp_path):
    script = tmp_path / "kernel.py"
    script.write_text("import importlib.util, socket, sys\n"
                      "print(importlib.util.find_spec('yaml'), sys.argv == [sys.argv[0]])\n"
                      "try:\n    socket.create_connection(('127.0.0.1', 9), timeout=5)\n"
                      "except OSError as exc:\n    print(exc.errno)\n")
    program = boot_program(["yaml"], True, os.getpid(), "run_script()")
    done = subprocess.run([sys.executable, "-I", "-c", program, str(script)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "True", "101"]
    orphan = boot_program([], False, 1, "run_script()")       # a parent that is not ours
    done = subprocess.run([sys.executable, "-I", "-c", orphan, str(script)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "kernelpack run-local has gone; not running the kernel\n"


def test_the_runner_names_the_failed_cell_and_what_a_kernel_error_printed():
    notebook = new_notebook(cells=[
        new_code_cell("print(1)", outputs=[new_output("stream", name="stdout", text="1\n")]),
        new_code_cell("run()", outputs=[
            new_output("stream", name="stderr", text="loading\nkernel error: no models\n\n"),
            new_output("error", ename="SystemExit", evalue="1", traceback=[])]),
        new_code_cell("x", outputs=[new_output("error", ename="NameError",
                                               evalue="name 'x' is not defined", traceback=[])])])
    nbformat.validate(notebook)
    assert notebook_runner.failure_line(notebook, 1) == \
        "notebook cell 2 failed: kernel error: no models"
    assert notebook_runner.failure_line(notebook, 2) == \
        "notebook cell 3 failed: NameError: name 'x' is not defined"
    assert notebook_runner.failure_line(notebook, None) == "notebook cell ? failed"


@pytest.mark.parametrize("name, allowed", [
    ("bundle_bootstrap.py", set()), ("sandbox_boot.py", set()),
    ("notebook_runner.py", {"nbformat", "nbclient", "traitlets"}),
    ("kernel_entry.py", {"inference_core"})])
def test_each_program_imports_only_what_runs_where_it_is_inlined(name, allowed):
    # Outside the host there is no kernelpack: the standard library, and what the place has
    # (the bundled runtime for the entry, Jupyter for the notebook runner).
    imported = set()
    for node in ast.walk(ast.parse(read_template(name))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) == allowed
