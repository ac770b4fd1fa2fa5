"""`kernelpack run-local`: run a built kernel the way Kaggle does, offline, on this machine.

Layout (a temporary Kaggle): `ROOT/input` (the user's input tree, laid out like /kaggle/input),
`ROOT/working` (the current directory, so `../input` resolves as on Kaggle), `ROOT/temp` (TMPDIR,
where the bundle unpacks) and `ROOT/src/kernel.py`. The kernel runs in a fresh `python -I` that
cannot import this project, with the network cut by `unshare -n` where the system allows it and a
socket guard otherwise, and is killed at the wall-clock budget.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from inference_core.runner import BUDGET_ENV

from . import PROJECT_ROOT
from .errors import SandboxError

# Runs first in the sandboxed interpreter: hides this project (an editable install puts it on the
# import path) so a kernel that leans on anything unbundled fails here as it would on Kaggle, and
# cuts the network in-process when no network namespace is available.
_BOOT = r"""
import runpy, sys
project = {project!r}
sys.meta_path[:] = [f for f in sys.meta_path
                    if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path[:] = [p for p in sys.path if "__editable__" not in p and p.rstrip("/") != project]
if {socket_guard!r}:
    import socket
    def _offline(*args, **kwargs):
        raise OSError(101, "Network is unreachable (kernelpack sandbox: internet is off)")
    socket.socket.connect = socket.socket.connect_ex = _offline
    socket.create_connection = socket.getaddrinfo = _offline
script = sys.argv[1]
sys.argv = [script]
runpy.run_path(script, run_name="__main__")
"""

NETWORK_MODES = ("auto", "unshare", "guard")

# Variables passed through from the host; everything else is dropped, as on a fresh machine.
_PASS_ENV = ("PATH", "LANG", "LC_ALL", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")


@dataclass
class SandboxResult:
    root: Path
    returncode: int
    seconds: float
    timed_out: bool
    network_cut: str
    log: Path
    outputs: list[Path] = field(default_factory=list)

    @property
    def submission(self) -> Path | None:
        path = self.root / "working" / "submission.csv"
        return path if path.is_file() else None


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


def prepare_root(root: Path, input_dir: Path, kernel: Path) -> Path:
    """A fresh Kaggle-like tree under `root`; returns the kernel script's path inside it."""
    if root.exists():
        shutil.rmtree(root)
    for name in ("working", "temp", "src"):
        (root / name).mkdir(parents=True)
    (root / "input").symlink_to(input_dir.resolve(), target_is_directory=True)
    script = root / "src" / "kernel.py"
    shutil.copyfile(kernel, script)
    return script


def run_local(kernel: str | Path, input_dir: str | Path, *, root: str | Path | None = None,
              budget: float | None = None, network: str = "auto",
              on_line: Callable[[str], None] | None = None) -> SandboxResult:
    """Run `kernel` (a kernel.py, or the folder holding it) offline against `input_dir`.

    `network` picks how the network is cut: "unshare" (a new, empty network namespace), "guard"
    (sockets refuse to connect, in-process) or "auto" (unshare where it works, else guard).
    """
    kernel, input_dir = Path(kernel), Path(input_dir)
    if kernel.is_dir():
        kernel = kernel / "kernel.py"
    if not kernel.is_file():
        raise SandboxError(f"{kernel}: kernel not found; run `kernelpack build CONFIG -o DIR` "
                           "first and pass DIR")
    if not input_dir.is_dir():
        raise SandboxError(f"{input_dir}: input folder not found; pass a folder laid out like "
                           "/kaggle/input (one sub-folder per dataset or competition)")
    if network not in NETWORK_MODES:
        raise SandboxError(f"network must be one of {', '.join(NETWORK_MODES)}, got {network!r}")
    if network == "unshare" and not network_namespace_available():
        raise SandboxError("`unshare -n` does not work here (needs root or user namespaces); "
                           "use network 'guard' or 'auto'")
    if budget is not None and budget <= 0:
        raise SandboxError(f"--budget must be a positive number of seconds, got {budget}")
    root = (Path(root) if root else kernel.parent / "sandbox").resolve()
    script = prepare_root(root, input_dir, kernel)

    namespace = network == "unshare" or (network == "auto" and network_namespace_available())
    boot = _BOOT.format(project=str(PROJECT_ROOT), socket_guard=not namespace)
    command = [sys.executable, "-I", "-c", boot, str(script)]
    if namespace:
        command = ["unshare", "-n", "--", *command]
    env = {key: os.environ[key] for key in _PASS_ENV if key in os.environ}
    env.update(HOME=str(root / "temp"), TMPDIR=str(root / "temp"), PYTHONUNBUFFERED="1",
               NO_ALBUMENTATIONS_UPDATE="1", KAGGLE_KERNEL_RUN_TYPE="Batch")
    if budget is not None:
        env[BUDGET_ENV] = str(budget)

    log_path = root / "kernel.log"
    start = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=root / "working", env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        reader = threading.Thread(target=_copy_lines, args=(process.stdout, log, on_line))
        reader.start()
        try:
            process.wait(timeout=budget)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            timed_out = True
        reader.join()
    seconds = time.monotonic() - start
    outputs = sorted(p for p in (root / "working").rglob("*") if p.is_file())
    return SandboxResult(root, process.returncode, seconds, timed_out,
                         "unshare -n" if namespace else "socket guard", log_path, outputs)


def _copy_lines(stream, log, on_line: Callable[[str], None] | None) -> None:
    for line in stream:
        log.write(line)
        if on_line:
            on_line(line.rstrip("\n"))
