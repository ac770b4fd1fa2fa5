"""`kernelpack run-local`: run a built kernel the way Kaggle does, offline, on this machine.

Layout (a temporary Kaggle): `ROOT/input` (the user's input tree, laid out like /kaggle/input),
`ROOT/working` (the current directory, so `../input` resolves as on Kaggle), `ROOT/temp` (TMPDIR,
where the bundle unpacks) and `ROOT/src/kernel.py`. The kernel runs in a fresh `python -I` that
cannot import this project, with the network cut by `unshare -n` where the system allows it (else
only guarded: Python's socket module refuses to connect, which a subprocess or `_socket` gets
around, and run-local says so), and is killed at the wall-clock budget. A notebook kernel
(`src/kernel.ipynb`) runs cell by cell in a Jupyter kernel that starts the same way (see
notebook.py); its executed copy is kept in `ROOT/notebook/`. A disk that fills up under ROOT is
an error (DiskFullError): what the run wrote is removed rather than left cut short, and a sandbox
that could not be laid out whole is removed before anything runs.

The interpreter is this one (or, for a script kernel, the one `python` names: a Python set up
like Kaggle's image, e.g. 3.12 with its packages), with everything installed here, so an import
hook hides what the Kaggle image lacks: this project (from a wheel it sits in site-packages beside
numpy and torch, so the hook hides names, never path entries) and every installed package that is
neither on the image nor needed by a package on it. A hidden name is still imported from the
kernel's own paths (the unpacked bundle, a wheel dataset it adds), never from this machine's
installation.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import inference_core
from inference_core.config import BUDGET_ENV, SUBMISSION_FILE, EnsembleConfig
from inference_core.errors import ConfigError
from inference_core.inputs import find_input

from ..bundler.image_packages import canonical_name, image_ships
from ..errors import SandboxError
from ..templates import fill_template
from .folder import CONFIG_FILE
from .notebook import (
    EXECUTED_FOLDER,
    JUPYTER_KERNEL,
    NOTEBOOK_FILE,
    check_runnable,
    is_notebook,
    runner_source,
)

# The boot program run first in the sandboxed interpreter (see templates/sandbox_boot.py).
BOOT_NAME = "sandbox_boot.py"

# How long the log may still be read after the kernel's group is stopped.
LEFTOVER_SECONDS = 5.0
NETWORK_MODES = ("auto", "unshare", "guard")
# What each mode does, as run-local reports it: the guard is no cut (it wraps this process's
# socket module; `_socket`, a subprocess or curl still reach the network).
NETWORK_CUT = "cut (unshare -n: an empty network namespace)"
NETWORK_GUARDED = ("NOT cut, only guarded (Python's socket module refuses to connect; _socket, "
                   "a subprocess or curl still reach the network)")
# In every sandbox root: run-local wipes a non-empty root only when it finds this file there.
SANDBOX_MARKER = ".kernelpack-sandbox"
# Less free space than this under the root, before or after a run, counts as a full disk: a
# kernel's last writes there may have been cut short.
LOW_SPACE_BYTES = 1 << 20
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# What a run may have written, emptied when the disk filled up during it.
_RUN_OUTPUTS = ("working", "temp", EXECUTED_FOLDER)

# Variables passed through from the host; everything else is dropped, as on a fresh machine.
_PASS_ENV = ("PATH", "LANG", "LC_ALL", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")


@dataclass
class SandboxResult:
    root: Path
    returncode: int
    seconds: float
    timed_out: bool
    network: str  # NETWORK_CUT or NETWORK_GUARDED
    log: Path
    outputs: list[Path] = field(default_factory=list)
    notebook: Path | None = None        # a notebook kernel's executed notebook
    submission_file: str = SUBMISSION_FILE  # the config's submission.file
    stopped: str | None = None  # when stopped at the budget: `stop_line`
    python: str = ""  # the kernel's interpreter and its version, when not this one

    def last_line(self) -> str:
        """The log's last non-blank line: for a failed notebook, which cell failed and why."""
        lines = self.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return lines[-1].strip() if lines else ""

    @property
    def submission(self) -> Path | None:
        path = self.root / "working" / self.submission_file
        return path if path.is_file() else None


class DiskFullError(SandboxError):
    """The disk under the sandbox root is (or became) full: nothing is run on it, or what the
    run wrote there is removed rather than left cut short."""


def space_left(path: Path) -> int:
    """Bytes an unprivileged writer may still put on the file system that holds `path`."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def _size(count: int) -> str:
    return f"{count / (1 << 20):.1f} MiB" if count >= 1 << 20 else f"{count / 1024:.0f} KiB"


def _remove_half_made(root: Path, exc: OSError, doing: str) -> SandboxError:
    """The error for an OSError while laying out the sandbox, once the half-made root is gone
    (it holds only what run-local wrote, and a half-copied kernel must never run)."""
    shutil.rmtree(root, ignore_errors=True)
    if exc.errno in _DISK_FULL_ERRNOS:
        return DiskFullError(f"--root {root}: {exc.strerror} while {doing}; nothing was run and "
                             "the half-made sandbox was removed; free space on that disk or "
                             "pass a --root on another")
    where = f"{exc.filename}: " if exc.filename else ""
    return SandboxError(f"--root {root}: cannot be prepared while {doing} ({where}"
                        f"{exc.strerror}); pick a folder you can write")


@cache
def hidden_packages(also_on_image: tuple[str, ...] = ()) -> frozenset[str]:
    """Top-level names installed here that a kernel on Kaggle could not import: this project, and
    every package neither on the Kaggle image nor required (transitively) by one that is.
    `also_on_image`: distributions to count as on the image (what a notebook's Jupyter kernel
    runs on)."""
    from importlib import metadata  # here, not at the top: `kernelpack --help` imports this module

    provides: dict[str, set[str]] = {}          # distribution -> its top-level names
    for name, distributions in metadata.packages_distributions().items():
        for distribution in distributions:
            provides.setdefault(canonical_name(distribution), set()).add(name)
    requires: dict[str, list[str]] = {}
    for distribution in metadata.distributions():
        wanted = [req for req in distribution.requires or () if "extra ==" not in req]
        requires[canonical_name(distribution.metadata["Name"] or "")] = [
            canonical_name(re.match(r"[A-Za-z0-9._-]+", req)[0]) for req in wanted]
    on_image = [d for d, names in provides.items() if any(image_ships(n) for n in names)]
    on_image += map(canonical_name, also_on_image)
    allowed: set[str] = set()
    while on_image:
        distribution = on_image.pop()
        if distribution not in allowed:
            allowed.add(distribution)
            on_image.extend(requires.get(distribution, ()))
    installed = set().union(*provides.values())
    reachable = set().union(*(provides.get(d, set()) for d in allowed))
    project = {__name__.partition(".")[0], inference_core.__name__}
    return frozenset((installed - reachable - set(sys.stdlib_module_names)) | project)


@cache
def network_namespace_available() -> bool:
    """True when `unshare -n` works here (root, or user namespaces allowed)."""
    if not shutil.which("unshare"):
        return False
    try:
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _overlaps(a: Path, b: Path) -> bool:
    """True when resolved paths `a` and `b` are equal or one holds the other."""
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def check_root(root: Path, keep: dict[str, Path]) -> None:
    """Refuse a sandbox root that would destroy what kernelpack did not make: a non-empty folder
    without the sandbox marker, a file, or a root overlapping one of `keep` (the input, the
    kernel, a swapped-in test set: `{"--input": path, ...}`, all resolved)."""
    for option, path in keep.items():
        if _overlaps(root, path):
            raise SandboxError(f"--root {root}: overlaps {option} {path} (the sandbox is wiped "
                               "before each run); pick a folder outside it, e.g. the default "
                               "KERNEL_DIR/sandbox")
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise SandboxError(f"--root {root}: exists and is not a folder; pick a new folder")
    if root.is_dir() and any(root.iterdir()) and not (root / SANDBOX_MARKER).is_file():
        raise SandboxError(f"--root {root}: folder is not empty and was not made by run-local "
                           f"(no {SANDBOX_MARKER} in it), so it is not wiped; pick a new or "
                           "empty folder")


def fresh_root(root: Path) -> None:
    """Empty (or create) the checked root and mark it as run-local's own."""
    try:
        if root.exists():
            shutil.rmtree(root)     # unlinks the input symlinks, never follows them
        root.mkdir(parents=True)
        (root / SANDBOX_MARKER).write_text("made by kernelpack run-local; wiped at each run\n",
                                           encoding="utf-8")
        for name in ("working", "temp", "src"):
            (root / name).mkdir()
    except OSError as exc:
        raise _remove_half_made(root, exc, "laying out the sandbox") from None


def prepare_root(root: Path, input_dir: Path, kernel: Path,
                 swaps: dict[str, Path] | None = None) -> Path:
    """Lay out the Kaggle-like tree under a `fresh_root`; returns the kernel script's path inside
    it. `swaps` maps paths under input/ (e.g. `digits/test`) to what should appear there
    instead."""
    if swaps:
        _overlay(input_dir.resolve(), root / "input", swaps)
    else:
        (root / "input").symlink_to(input_dir.resolve(), target_is_directory=True)
    script = root / "src" / (NOTEBOOK_FILE if is_notebook(kernel) else "kernel.py")
    shutil.copyfile(kernel, script)
    return script


def _overlay(source: Path, target: Path, swaps: dict[str, Path]) -> None:
    """Mirror `source` into `target` with symlinks, replacing the swapped paths; only the
    folders on the way to a swapped path are real folders."""
    target.mkdir()
    heads = {relative.split("/", 1)[0] for relative in swaps}
    for entry in sorted(source.iterdir()):
        if entry.name not in heads:
            (target / entry.name).symlink_to(entry.resolve())
    for head in sorted(heads):
        if head in swaps:
            (target / head).symlink_to(swaps[head].resolve())
            continue
        inner = {r.split("/", 1)[1]: p for r, p in swaps.items() if r.split("/", 1)[0] == head}
        if not (source / head).is_dir():
            raise SandboxError(f"{source / head}: not found, so nothing can be swapped under it; "
                               "check test.images in the kernel's config")
        _overlay(source / head, target / head, inner)


def kernel_config(kernel_dir: Path) -> EnsembleConfig | None:
    """The config `kernelpack build` wrote beside the kernel (kernel-config.json); None beside a
    kernel `build` did not write."""
    config_path = kernel_dir / CONFIG_FILE
    if not config_path.is_file():
        return None
    try:
        return EnsembleConfig.from_json(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, ConfigError) as exc:  # UnicodeDecodeError is a ValueError
        raise SandboxError(f"{config_path}: not the config `kernelpack build` writes ({exc}); "
                           "rebuild the kernel") from None


def _as_found(input_dir: Path, named: str) -> str:
    """The config's path `named` relative to `input_dir`, where the kernel finds it (in any of
    Kaggle's layouts); an absolute path outside it, as before, from the root of input/."""
    found = find_input(input_dir, named).path
    return found.relative_to(input_dir).as_posix() if found.is_relative_to(input_dir) \
        else named.strip("/")


def hidden_test_swaps(kernel_dir: Path, test_dir: Path, input_dir: Path, root: Path | None
                      ) -> dict[str, Path]:
    """What to swap under input/ (the user's `input_dir`) so that the kernel sees `test_dir` as
    its test set, the way Kaggle swaps in the hidden test set at rerun: the test folder and, when
    the config reads ids from a sample submission, a sample submission that lists the new images
    (written into `root`; with None, the inputs are only checked)."""
    config = kernel_config(kernel_dir)
    if config is None:
        raise SandboxError(f"{kernel_dir / CONFIG_FILE}: not found; --test-dir needs the folder "
                           "written by `kernelpack build` (rebuild the kernel)")
    test, submission = config.test, config.submission
    if not test_dir.is_dir():
        raise SandboxError(f"{test_dir}: test folder not found; pass a folder of test images")
    input_dir = input_dir.resolve()
    swaps = {_as_found(input_dir, test.images): test_dir}
    if test.sample_submission:
        images = sorted(p for p in test_dir.glob(test.pattern) if p.is_file())
        if not images:
            raise SandboxError(f"{test_dir}: no files match {test.pattern!r} (test.pattern)")
        if root is None:  # only checking
            return swaps
        sample = root / "swapped_sample_submission.csv"
        with open(sample, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([submission.id_column, submission.label_column])
            writer.writerows([p.stem, ""] for p in images)
        swaps[_as_found(input_dir, test.sample_submission)] = sample
    return swaps


def run_local(kernel: str | Path, input_dir: str | Path, *, root: str | Path | None = None,
              budget: float | None = None, network: str = "auto",
              test_dir: str | Path | None = None,
              on_line: Callable[[str], None] | None = None,
              launcher: list[str] | None = None,
              python: str | Path | None = None) -> SandboxResult:
    """Run `kernel` (a kernel.py, or the folder holding it) offline against `input_dir`.

    `network` picks how the network is cut: "unshare" (a new, empty network namespace), "guard"
    (sockets refuse to connect, in-process) or "auto" (unshare where it works, else guard).
    `test_dir` swaps in another test set, as Kaggle does at rerun (it needs the
    kernel-config.json that `build` writes beside kernel.py). `launcher` is put before the
    command (the local Kaggle service runs each kernel in its own container through it).
    `python` runs a script kernel with another interpreter (one set up like Kaggle's image).
    """
    kernel, input_dir = Path(kernel), Path(input_dir)
    if kernel.is_dir():
        kernel = kernel / _code_file(kernel)
    if not kernel.is_file():
        raise SandboxError(f"{kernel}: kernel not found; run `kernelpack build CONFIG -o DIR` "
                           "first and pass DIR")
    if is_notebook(kernel):
        if python is not None:
            raise SandboxError(f"--python {python}: runs script kernels; {kernel.name} is a "
                               "notebook, run by this Python's Jupyter kernel; build the kernel "
                               "as a script (no --notebook) to run it with another Python")
        check_runnable(kernel)
    interpreter = sys.executable if python is None else _interpreter(str(python))
    described = "" if python is None else f"{interpreter} ({python_version(interpreter)})"
    if not input_dir.is_dir():
        raise SandboxError(f"{input_dir}: input folder not found; pass a folder laid out like "
                           "/kaggle/input (one sub-folder per dataset or competition)")
    if network not in NETWORK_MODES:
        raise SandboxError(f"network must be one of {', '.join(NETWORK_MODES)}, got {network!r}")
    if network == "unshare" and not network_namespace_available():
        raise SandboxError("`unshare -n` does not work here (needs root or user namespaces); "
                           "use network 'guard' or 'auto'")
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise SandboxError(f"--budget must be a positive, finite number of seconds, got {budget}")
    root = (Path(root) if root else kernel.parent / "sandbox").resolve()
    keep = {"--input": input_dir.resolve(), "kernel": kernel.resolve()}
    if test_dir is not None:
        keep["--test-dir"] = Path(test_dir).resolve()
    check_root(root, keep)
    # The kernel's output: a folder `build` wrote says which file; a bare kernel, the default.
    config = kernel_config(kernel.parent)
    submission_file = config.submission.file if config else SUBMISSION_FILE
    swaps = None
    if test_dir is not None:
        # Bad input fails before the wipe.
        hidden_test_swaps(kernel.parent, Path(test_dir), input_dir, None)
    fresh_root(root)
    namespace = network == "unshare" or (network == "auto" and network_namespace_available())
    parent = None if launcher else os.getpid()
    try:
        if test_dir is not None:
            swaps = hidden_test_swaps(kernel.parent, Path(test_dir), input_dir, root)
        script = prepare_root(root, input_dir, kernel, swaps)
        if is_notebook(script):
            command = _notebook_command(script, root, socket_guard=not namespace, parent=parent)
        else:
            program = boot_program(hidden_packages(), not namespace, parent, "run_script()")
            command = [interpreter, "-I", "-c", program, str(script)]
    except OSError as exc:  # a full disk: a half-copied kernel or test list must never run
        raise _remove_half_made(root, exc, "laying out the sandbox") from None
    if (free := space_left(root)) < LOW_SPACE_BYTES:
        shutil.rmtree(root, ignore_errors=True)
        raise DiskFullError(f"--root {root}: only {_size(free)} left on its disk, too little to "
                            "run a kernel; nothing was run; free space on that disk or pass a "
                            "--root on another")
    if namespace:
        command = ["unshare", "-n", "--", *command]
    command = [*(launcher or ()), *command]
    env = {key: os.environ[key] for key in _PASS_ENV if key in os.environ}
    env.update(HOME=str(root / "temp"), TMPDIR=str(root / "temp"), PYTHONUNBUFFERED="1",
               NO_ALBUMENTATIONS_UPDATE="1", KAGGLE_KERNEL_RUN_TYPE="Batch")
    if budget is not None:
        env[BUDGET_ENV] = str(budget)

    log_path = root / "kernel.log"
    start = time.monotonic()
    try:
        log = _Log(log_path)
    except OSError as exc:
        raise _remove_half_made(root, exc, "creating kernel.log") from None
    with log:
        process = subprocess.Popen(command, cwd=root / "working", env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        reader = threading.Thread(target=_copy_lines, args=(process.stdout, log, on_line))
        reader.start()
        timed_out = False
        try:
            with _stopped_with_this_process(process):
                process.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            timed_out = True
        # The kernel's whole group ends with it: a daemon it forked would outlive the run and
        # hold the log open, keeping run-local waiting.
        _kill_group(process)
        reader.join(timeout=LEFTOVER_SECONDS)
        if reader.is_alive():  # a process that left the group still holds the log: stop reading
            os.close(process.stdout.fileno())
            reader.join()
        full = _filled_disk(root, log, f"was stopped at the {budget:g} s budget" if timed_out
                            else f"exited with code {process.returncode}")
        stopped = full or (stop_line(budget, root / "working" / submission_file)
                           if timed_out else None)
        if stopped:  # the kernel's own last line may be anything: say why it ended
            log.write(f"run-local: {stopped}\n")
            if on_line:
                on_line(f"run-local: {stopped}")
    if full:
        if log.error:  # the log's own line, now that the run's outputs have made room for it
            with suppress(OSError), open(log_path, "a", encoding="utf-8") as tail:
                tail.write(f"\nrun-local: {full}\n")
        raise DiskFullError(f"{full}; log: {log_path}")
    seconds = time.monotonic() - start
    outputs = sorted(p for p in (root / "working").rglob("*") if p.is_file())
    executed = root / EXECUTED_FOLDER / script.name
    return SandboxResult(root, process.returncode, seconds, timed_out,
                         NETWORK_CUT if namespace else NETWORK_GUARDED, log_path, outputs,
                         executed if executed.is_file() and not executed.is_symlink() else None,
                         submission_file, stopped, described)


def _interpreter(python: str) -> str:
    """The path of `--python`: a bare name looked up on PATH, a path made absolute (not
    resolved: a venv's python is a link, and the venv is found from the link's own folder)."""
    if not python.strip():
        raise SandboxError("--python: empty; pass the path of a Python interpreter, e.g. a "
                           "venv's bin/python")
    if os.sep not in python:
        found = shutil.which(python)
        if found is None:
            raise SandboxError(f"--python {python}: not found on PATH; pass the path of a "
                               "Python interpreter, e.g. a venv's bin/python")
        python = found
    return str(Path(python).absolute())


def python_version(python: str) -> str:
    """`Python 3.12.1` of the interpreter `python`; SandboxError when it does not run."""
    try:
        run = subprocess.run([python, "-I", "-c", "import platform; print("
                              "platform.python_version())"], capture_output=True, text=True,
                             timeout=60, env={"PATH": os.environ.get("PATH", "")})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxError(f"--python {python}: does not run ({exc}); pass the path of a Python "
                           "interpreter, e.g. a venv's bin/python") from None
    if run.returncode != 0 or not re.fullmatch(r"\d+\.\d+\.\d+\S*", run.stdout.strip()):
        said = (run.stderr or run.stdout).strip().splitlines() or [""]
        raise SandboxError(f"--python {python}: is not a working Python interpreter (exit "
                           f"{run.returncode}: {said[0][:200]}); pass the path of one, e.g. a "
                           "venv's bin/python")
    return f"Python {run.stdout.strip()}"


def stop_line(budget: float, submission: Path) -> str:
    """Why run-local stopped a kernel (the log's last line, after `run-local: `): the budget,
    and the submission the kernel left (the one it wrote last, whole: submissions are written
    atomically), or that there is none."""
    stopped = f"kernel stopped at the {budget:g} s budget"
    if not submission.is_file():
        return f"{stopped}; it left no {submission.name}"
    with open(submission, "rb") as handle:
        rows = max(sum(1 for _ in handle) - 1, 0)  # less the header
    return f"{stopped}; it left {submission.name} ({rows} rows, as last written)"


def _code_file(folder: Path) -> str:
    """The kernel file of a folder `build` wrote: kernel-metadata.json's code_file (a file name
    beside it), else kernel.py."""
    from ..metadata import KERNEL_METADATA

    try:
        name = json.loads((folder / KERNEL_METADATA).read_text(encoding="utf-8"))["code_file"]
    except (OSError, ValueError, KeyError, TypeError):
        return "kernel.py"
    return name if isinstance(name, str) and name and Path(name).name == name else "kernel.py"


def boot_program(hidden: Iterable[str], socket_guard: bool, parent: int | None, then: str
                 ) -> str:
    """The sandbox's boot code, given its settings as data (hide the top-level names `hidden`;
    cut the network in-process with `socket_guard`; die with the process `parent`, None for
    none, 0 for the parent whichever it is), then the code `then` that runs next."""
    settings = json.dumps({"hidden": sorted(hidden), "socket_guard": socket_guard,
                           "parent": parent})
    return f"{fill_template(BOOT_NAME, {'SETTINGS': f'json.loads({settings!r})'})}\n{then}\n"


def _notebook_command(notebook: Path, root: Path, socket_guard: bool, parent: int | None
                      ) -> list[str]:
    """The runner that executes `notebook` with a Jupyter kernel, which starts with the boot
    code a script gets (hook, network cut; it dies with the runner), and writes the executed
    notebook to ROOT/notebook/."""
    boot = root / "src" / "kernel_boot.py"
    boot.write_text(boot_program(hidden_packages(JUPYTER_KERNEL), socket_guard, 0,
                                 "start_ipykernel()"), encoding="utf-8")
    (root / EXECUTED_FOLDER).mkdir(exist_ok=True)
    # The runner dies with run-local as a script kernel does; it needs no hook (kernelpack's
    # own code, reading only the notebook) and opens no network connection.
    runner = boot_program((), False, parent, runner_source())
    return [sys.executable, "-I", "-c", runner, str(notebook),
            str(root / EXECUTED_FOLDER / notebook.name), str(boot)]


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the kernel's process group (it leads its own session) and reap it."""
    with suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class RunInterrupted(SandboxError):
    """run-local was asked to stop (SIGTERM, SIGHUP); the kernel has been stopped."""


@contextmanager
def _stopped_with_this_process(process: subprocess.Popen) -> Iterator[None]:
    """While the kernel runs, anything that ends this process ends the kernel's process group
    first: Ctrl-C, SIGTERM and SIGHUP here (handlers only exist in the main thread), any error.
    When this process is killed outright, the kernel's own parent-death signal (set up by the
    boot code) kills it."""
    def stop(signum: int, frame) -> None:
        raise RunInterrupted(f"run-local stopped by {signal.Signals(signum).name}; the kernel "
                             "was stopped with it")

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {number: signal.signal(number, stop)
                    for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    except BaseException:
        _kill_group(process)
        raise
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class _Log:
    """kernel.log, written line by line; the first failed write (a full disk) is kept in
    `error` and the rest of the kernel's output is still read (and shown), only not written,
    so a kernel is never left blocked on a pipe nobody drains."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115 (__exit__)
        self.error: OSError | None = None

    def write(self, line: str) -> None:
        if self.error is None:
            try:
                self.file.write(line)
            except OSError as exc:
                self.error = exc

    def __enter__(self) -> _Log:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.file.close()
        except OSError as error:  # what was left in its buffer could not be written either
            self.error = self.error or error


def _filled_disk(root: Path, log: _Log, ended: str) -> str | None:
    """When the disk under `root` filled up during the run (its log could not be written, or
    less than LOW_SPACE_BYTES is left): what happened, once what the run wrote is removed (a
    file cut short is worse than none); else None. `ended`: how the kernel ended."""
    free = space_left(root)
    if log.error is None and free >= LOW_SPACE_BYTES:
        return None
    for name in _RUN_OUTPUTS:
        _empty(root / name)
    cause = (f"kernel.log could not be written: {log.error.strerror}" if log.error
             else f"{_size(free)} left")
    return (f"--root {root}: the disk filled up while the kernel ran ({cause}; the kernel "
            f"{ended}); what it wrote in working/ and temp/ was removed, "
            "not left cut short; free space on that disk or pass a --root on another (on "
            "Kaggle, /kaggle/working holds 20 GiB)")


def _empty(folder: Path) -> None:
    """Remove everything in `folder` (never following links), keeping the folder itself."""
    if folder.is_dir() and not folder.is_symlink():
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with suppress(OSError):
                    entry.unlink()


def _copy_lines(stream, log: _Log, on_line: Callable[[str], None] | None) -> None:
    with suppress(OSError, ValueError):  # the pipe closed under it (see run_local)
        for line in stream:
            log.write(line)
            if on_line:
                on_line(line.rstrip("\n"))
