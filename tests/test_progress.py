"""Progress bars and -p/--path.

Bars: the real `kernelpack` command runs in a child process whose stderr is a pseudo-terminal
(os.openpty), then a pipe; a bar must show on the terminal (encrypt, decrypt, a dataset push to
the local Kaggle service, a large bundle), with the right byte counts, and never on a pipe, with
--quiet, or for a small bundle. -p/--path: every command that takes a folder accepts it, the
positional form still works, and two different folders are one usage error."""

import contextlib
import fcntl
import io
import itertools
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest
import torch
from kaggle_helpers import (
    KEY,
    USER,
    dataset_folder,
    kaggle_account,
    kaggle_world,
    tiny_kernel,
    write_files,
)
from tqdm import tqdm

from conftest import ENSEMBLE_YML
from inference_core.checkpoint import save_checkpoint
from inference_core.model_factory import create_model
from kernelpack.bundler.bundle import PROGRESS_BYTES
from kernelpack.cli import main
from kernelpack.cli.main import make_parser
from kernelpack.kaggle.service import Fault, KaggleService
from kernelpack.metadata import URL_ENV

# Runs each argv list of argv[1] (JSON) through the CLI's main(), marking where each one starts
# on both streams, so one interpreter start serves many commands.
CHILD = """\
import json, sys
from kernelpack.cli import main
for argv in json.loads(sys.argv[1]):
    print("@@command", flush=True)
    print("@@command", file=sys.stderr, flush=True)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    print(f"@@exit={code}", file=sys.stderr, flush=True)
"""
BAR = re.compile(r"%\|")  # what every tqdm bar with a known total prints


def run_commands(commands: dict[str, list[str]], *, tty: bool, env: dict[str, str]
                 ) -> dict[str, tuple[str, str]]:
    """name -> (stdout, stderr) of each command, run in one child with stderr on a
    pseudo-terminal (`tty`) or a pipe."""
    argv = [sys.executable, "-c", CHILD, json.dumps(list(commands.values()))]
    if tty:
        master, slave = os.openpty()
        # A terminal 100 columns wide (a new pseudo-terminal has 0, where tqdm draws nothing).
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=slave, env=env)
        os.close(slave)
        stderr = _read_until_closed(master, deadline=time.monotonic() + 120)
        stdout = child.communicate(timeout=60)[0]
    else:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env,
                              timeout=120)
        stdout, stderr = done.stdout, done.stderr
    assert child.returncode == 0 if tty else done.returncode == 0
    # A terminal turns "\n" into "\r\n"; a bar redraws itself with "\r".
    err = stderr.decode("utf-8", "replace").replace("\r\n", "\n")
    out_parts = stdout.decode().split("@@command\n")[1:]
    err_parts = err.split("@@command\n")[1:]
    assert len(out_parts) == len(err_parts) == len(commands), (stdout, err)
    return dict(zip(commands, zip(out_parts, err_parts, strict=True), strict=True))


def _read_until_closed(master: int, deadline: float) -> bytes:
    chunks = []
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
    finally:
        os.close(master)
    return b"".join(chunks)


def _size(count: int) -> str:
    """A byte count as the bars print it (KiB steps, three digits)."""
    return tqdm.format_sizeof(count, divisor=1024)


def _final_bar(stderr: str, desc: str) -> str:
    """The last drawing of the bar named `desc`."""
    drawings = [part for part in re.split(r"[\r\n]", stderr) if part.startswith(f"{desc}:")]
    assert drawings, f"no bar {desc!r} in {stderr!r}"
    return drawings[-1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every command run twice: stderr on a terminal, then on a pipe (plus --quiet ones)."""
    base = tmp_path_factory.mktemp("progress")
    home, tmp = kaggle_account(base)
    torch.manual_seed(0)
    checkpoint = base / "m.pt"
    save_checkpoint(checkpoint, "small_cnn", 10, {"input_size": 32, "name": "m"},
                    create_model("small_cnn", num_classes=10, width=8))
    key, other_key = base / "k.key", base / "other.key"
    for path in (key, other_key):
        assert main(["keygen", "-o", str(path)]) == 0
    # A package with more Python source than PROGRESS_BYTES: a few large string constants,
    # which scan fast; and a script that imports only the standard library.
    package = base / "code" / "bigpkg"
    module_bytes = PROGRESS_BYTES // 8 + 1000
    write_files(package, {"__init__.py": b"from . import " + b", ".join(
        f"m{i}".encode() for i in range(10)) + b"\n"})
    for i in range(10):
        (package / f"m{i}.py").write_text(f"import json\nDATA = {'x' * module_bytes!r}\n")
    big_source = sum(path.stat().st_size for path in package.glob("*.py"))
    (base / "code" / "big.py").write_text("import bigpkg\nprint(len(bigpkg.m0.DATA))\n")
    (base / "small.py").write_text("import json\nprint(json.dumps([1]))\n")
    (base / "ensemble.yml").write_text(ENSEMBLE_YML)
    files = {"a.bin": os.urandom(2 << 20), "b.bin": os.urandom(1 << 20)}

    def commands(kind: str) -> dict[str, list[str]]:
        quiet = ["--quiet"] if kind == "quiet" else []
        folder = dataset_folder(base / f"ds-{kind}", f"ds-{kind}", files)
        refused = {"refused": ["decrypt", str(base / "m-tty.kpenc"), "--key", str(other_key),
                               "-o", str(base / "never.pt")]} if kind == "tty" else {}
        return {
            "encrypt": ["encrypt", str(checkpoint), "--key", str(key), "-o",
                        str(base / f"m-{kind}.kpenc"), *quiet],
            "decrypt": ["decrypt", str(base / f"m-{kind}.kpenc"), "--key", str(key), "-o",
                        str(base / f"m-{kind}.pt"), *quiet],
            "push": ["dataset", "push", "-p", str(folder), *quiet],
            "bundle": ["bundle", str(base / "code" / "big.py"), "-o",
                       str(base / f"big-{kind}.py"), *quiet],
            "small": ["bundle", str(base / "small.py"), "-o", str(base / f"small-{kind}.py"),
                      *quiet],
            "build": ["build", str(base / "ensemble.yml"), "-o", str(base / f"kernel-{kind}"),
                      "--code", str(package), *quiet],
            **refused,
        }

    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAGGLE_", "TQDM_"))}
    with KaggleService(base / "service", users={USER: KEY}) as service:
        env.update(HOME=str(home), KAGGLE_CONFIG_DIR=str(home / "config"), TMPDIR=str(tmp),
                   **{URL_ENV: service.url})
        # Every update redrawn, so the terminal shows the counts between start and end.
        tty_env = {**env, "TQDM_MININTERVAL": "0", "TQDM_MINITERS": "1"}
        # One child for the terminal, --quiet included, and one for the pipe.
        plans = {kind: commands(kind) for kind in ("tty", "quiet", "pipe")}
        # The terminal's push is cut off half-way through its first file (503), then resumed.
        service.faults.add(Fault("503", "upload"))
        on_tty = run_commands({f"{kind}:{name}": argv for kind in ("tty", "quiet")
                               for name, argv in plans[kind].items()}, tty=True, env=tty_env)
        assert service.faults.pending() == []
        result = {kind: {name: on_tty[f"{kind}:{name}"] for name in plans[kind]}
                  for kind in ("tty", "quiet")}
        result["pipe"] = run_commands(plans["pipe"], tty=False, env=env)
    return result, checkpoint.stat().st_size, big_source, files


@pytest.mark.slow
def test_encrypt_and_decrypt_count_every_byte_on_a_terminal(runs):
    result, size, _, _ = runs
    out, err = result["tty"]["encrypt"]
    assert out.startswith("wrote ") and err.endswith("@@exit=0\n"), (out, err)
    final = _final_bar(err, "encrypt m.pt")
    assert " 100%|" in final and f"| {_size(size)}/{_size(size)} [" in final, final
    assert f"| {_size(size)}/{_size(size)} [" in _final_bar(err, "hash m.pt")
    out, err = result["tty"]["decrypt"]
    final = _final_bar(err, "decrypt m-tty.kpenc")
    assert " 100%|" in final and f"| {_size(size)}/{_size(size)} [" in final, final
    assert f"({size} bytes, mode 0600)" in out
    # A file refused (here: the wrong key) prints its error line alone, no bar before it.
    out, err = result["tty"]["refused"]
    assert err.startswith("kernelpack: error: ") and "does not match the key" in err, err
    assert err.count("\n") == 2 and err.endswith("@@exit=1\n"), err


@pytest.mark.slow
def test_a_dataset_push_shows_one_bar_over_all_its_files(runs):
    result, _, _, files = runs
    out, err = result["tty"]["push"]
    assert out.startswith(f"{USER}/ds-tty: version 1 created (2 files)"), (out, err)
    desc = f"upload {USER}/ds-tty"
    total = sum(map(len, files.values()))
    assert f"| {_size(total)}/{_size(total)} [" in _final_bar(err, desc)
    # Before it, every file is hashed (read whole), on a bar of its own.
    assert f"| {_size(total)}/{_size(total)} [" in _final_bar(err, f"hash {USER}/ds-tty")
    # Counted as the bytes go out, not file by file: some drawing lies inside the first file.
    counts = [int(match) for match in re.findall(rf"{re.escape(desc)}: +(\d+)%", err)]
    first_file = 100 * len(files["a.bin"]) // total
    assert any(0 < count < first_file for count in counts), counts
    # The upload was cut off half-way through the first file and resumed: the bar steps back
    # once, to what the service holds, so no byte is counted twice.
    sent = [float(n) * 1024 ** " kMG".index(u or " ") for n, u in re.findall(
        rf"{re.escape(desc)}: .*?\| ([\d.]+)([kMG]?)/{_size(total)} \[", err)]
    back = [after for before, after in itertools.pairwise(sent) if after < before]
    assert len(back) == 1 and abs(back[0] - len(files["a.bin"]) / 2) < 64 << 10, back
    assert max(sent) <= total


@pytest.mark.slow
def test_a_large_bundle_shows_a_bar_and_a_small_one_none(runs):
    result, _, big_source, _ = runs
    out, err = result["tty"]["bundle"]
    assert "vendored" not in out and "your code: bigpkg" in out, out
    final = _final_bar(err, "bundle: scan imports")
    assert f"| {_size(big_source)}/{_size(big_source)} [" in final, final
    out, err = result["tty"]["small"]
    assert out.startswith("wrote ") and not BAR.search(err) and "scan imports" not in err, err
    # build bundles the runtime (no bar alone) and --code: here bigpkg, so its source and more.
    out, err = result["tty"]["build"]
    assert out.startswith("wrote "), (out, err)
    scanned = re.search(r"\| ([\d.]+)([kMG]?)/\1\2 \[", _final_bar(err, "bundle: scan imports"))
    assert scanned, err
    assert float(scanned[1]) * 1024 ** " kMG".index(scanned[2] or " ") > big_source, scanned


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pipe", "quiet"])
def test_no_bar_on_a_pipe_or_with_quiet(runs, kind):
    result, size, _, _ = runs
    for name, (out, err) in result[kind].items():
        assert out.startswith(("wrote ", f"{USER}/ds-{kind}: version 1 created")), (name, out)
        assert err.endswith("@@exit=0\n"), (name, err)
        assert not BAR.search(err) and "\r" not in err, (name, err)
    assert f"({size} bytes, mode 0600)" in result[kind]["decrypt"][0]


# -p/--path ---------------------------------------------------------------------------------

@pytest.fixture
def world(tmp_path, monkeypatch):
    yield from kaggle_world(tmp_path, monkeypatch)


def _usage_error(argv: list[str]) -> str:
    """The one line a usage error prints (argparse exits 2)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = err.getvalue().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.slow
def test_dataset_and_kernel_push_take_the_folder_either_way(world, tmp_path):
    positional = dataset_folder(tmp_path / "one", "data-one", {"x.bin": b"1"})
    assert world.kernelpack("dataset", "push", str(positional), "--wait").returncode == 0
    option = dataset_folder(tmp_path / "two", "data-two", {"x.bin": b"2"})
    pushed = world.kernelpack("dataset", "push", "--path", str(option), "--wait")
    assert pushed.stdout.startswith(f"{USER}/data-two: version 1 is ready"), pushed
    same = world.kernelpack("dataset", "push", str(option), "-p", f"{option}/", "--wait")
    assert same.stdout.startswith(f"{USER}/data-two: unchanged since version 1"), same
    kernel = tiny_kernel(tmp_path / "k", "tiny-kernel", "print('hi')\n")
    pushed = world.kernelpack("kernel", "push", "-p", str(kernel))
    assert pushed.stdout.startswith(f"{USER}/tiny-kernel: version 1"), pushed
    assert world.kernelpack("kernel", "push", str(kernel)).stdout.startswith(
        f"{USER}/tiny-kernel: version 2")


def test_two_different_folders_or_none_is_one_usage_error(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for argv in (["dataset", "push", str(a), "-p", str(b)],
                 ["kernel", "push", "--path", str(a), str(b)],
                 ["run-local", str(a), "-p", str(b), "--input", str(a)],
                 ["build", "cfg.yml", "-o", str(a), "-p", str(b)],
                 ["serve-kaggle", "--root", str(a), "--path", str(b)]):
        line = _usage_error(argv)
        assert f"two folders given, {a} and {b}; pass the folder once" in line, line
    for argv in (["dataset", "push"], ["kernel", "push", "--wait"],
                 ["run-local", "--input", str(a)]):
        line = _usage_error(argv)
        assert "the folder is missing; pass it as DIR or with -p DIR" in line, line


def test_build_and_run_local_take_their_folders_with_p(tmp_path, ensemble_yml, digits_input):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["build", str(ensemble_yml), "-p", str(tmp_path / "built")]) == 0
    assert (tmp_path / "built" / "kernel.py").is_file(), out.getvalue()
    kernel = tiny_kernel(tmp_path / "tiny", "tiny", "open('submission.csv', 'w').write('id\\n')\n")
    for how in (["-p", str(kernel)], [str(kernel)]):
        with contextlib.redirect_stdout(out):
            code = main(["run-local", *how, "--input", str(digits_input), "--network", "guard"])
        assert code == 0, out.getvalue()
    assert out.getvalue().count("submission written: ") == 2


def test_serve_kaggle_and_bundle_take_p(tmp_path):
    assert make_parser().parse_args(["serve-kaggle", "-p", "state"]).root == "state"
    assert make_parser().parse_args(["serve-kaggle", "--root", "state"]).root == "state"
    lib = write_files(tmp_path / "lib", {"helper.py": b"VALUE = 41\n"})
    entry = tmp_path / "main.py"
    entry.write_text("import helper\nprint(helper.VALUE + 1)\n")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["bundle", str(entry), "-o", str(tmp_path / "out.py"), "-p", str(lib)]) == 0
    ran = subprocess.run([sys.executable, str(tmp_path / "out.py")], capture_output=True,
                         text=True, cwd=tmp_path)
    assert ran.stdout == "42\n", ran
