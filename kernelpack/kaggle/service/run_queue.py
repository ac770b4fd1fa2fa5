"""Kernel runs on `workers` worker threads (one by default; Kaggle runs several sessions of a user
at once, which `serve-kaggle --workers N` rehearses): each waits `processing_seconds` in the queue
(the QUEUED state a client sees), then runs offline in the sandbox, inside its own container
(see `jail.py`) where this machine allows it. Runs side by side share nothing but the service:
each has its own folder, container and process group."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

from inference_core.config import KAGGLE_RUN_SECONDS

from ...errors import SandboxError
from ...kernel.notebook import EXECUTED_FOLDER
from ...kernel.sandbox import run_local
from . import jail

ISOLATED = "container: own mount, pid and network namespaces, a root holding only the system, " \
           "Python and the run's folders, user nobody"


class RunStopped(Exception):
    """The service stopped while a run was going: its version is left as it was on disk, to be
    run again when the service next starts."""


@cache
def isolation() -> tuple[bool, str]:
    """(whether runs get their own container, how they run), decided once per process."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return False, "NOT isolated (a container needs root on Linux): kernels can read " \
                      "everything this user can"
    try:
        probe = subprocess.run(["unshare", "--mount", "--pid", "--net", "--fork", "--kill-child",
                                "--propagation", "private", "true"],
                               capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"NOT isolated (unshare failed: {exc}): kernels can read everything"
    if probe.returncode != 0:
        return False, (f"NOT isolated (unshare: {probe.stderr.decode(errors='replace').strip()})"
                       ": kernels can read everything")
    return True, ISOLATED


# Each run's /tmp and /dev/shm (in a container) are tmpfs, held in memory: capped, so that a
# kernel filling them meets ENOSPC, as on a full disk, instead of taking the machine's memory.
SCRATCH_BYTES = 1 << 30


class Runner:
    def __init__(self, processing_seconds: float, state_root: Path, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be 1 or more, got {workers}")
        self.processing_seconds = processing_seconds
        self.scratch_bytes = SCRATCH_BYTES  # each of /tmp and /dev/shm
        self.state_root = state_root      # hidden from every run
        self.workers = workers
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._stopping = threading.Event()
        # Each worker's run going now: worker thread id -> its pid file.
        self._pid_files: dict[int, Path] = {}
        self._pid_lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, name=f"kaggle-service-runner-{n}",
                                          daemon=True) for n in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def wait_idle(self) -> None:
        """Block until every queued run has finished."""
        self._jobs.join()

    def stop(self) -> None:
        """Stop taking runs and kill the ones going, with every process they started."""
        self._stopping.set()
        for _ in self._threads:
            self._jobs.put(None)
        # A run may be starting right now, before its pid file exists: kill until it is over.
        while any(thread.is_alive() for thread in self._threads):
            self._kill_current()
            for thread in self._threads:
                thread.join(0.1 / len(self._threads))

    def _kill_current(self) -> None:
        with self._pid_lock:
            pid_files = list(self._pid_files.values())
        for pid_file in pid_files:
            try:
                pid = int(pid_file.read_text())
            except (OSError, ValueError):
                continue
            if pid > 0:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)   # the run's group: the container's pid 1

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                if not self._stopping.is_set():
                    time.sleep(self.processing_seconds)
                    job()
            except RunStopped:
                pass
            except Exception as exc:   # one broken run must not stop the queue
                print(f"kaggle service: a run failed unexpectedly ({exc!r}); the next runs go "
                      "on", file=sys.stderr, flush=True)
            finally:
                self._jobs.task_done()
        self._jobs.task_done()     # the None that stopped this worker

    def run(self, kernel: Path, folder: Path, mounts: dict[str, Path], budget: float | None
            ) -> str | None:
        """Run `kernel` (a script or a notebook) offline in `folder/run` (log in `kernel.log`,
        outputs in `working/`, a notebook's executed copy in `notebook/`) with `mounts` (mount
        point under input/ -> folder) read-only at `folder/input`; returns why the run failed,
        or None."""
        if self._stopping.is_set():
            raise RunStopped
        # Kaggle's limit for a batch session, unless the push set `sessionTimeoutSeconds`.
        budget = budget or KAGGLE_RUN_SECONDS
        isolated, _ = isolation()
        folder.mkdir(parents=True, exist_ok=True)
        binds = _lay_out_input(folder / "input", mounts, isolated)
        root = folder / "run"
        spec = {"isolate": isolated, "pid_file": str(folder / "run.pid"), "parent": os.getpid(),
                "new_root": str(folder / "container"), "state": str(self.state_root),
                "python": _python_prefixes(), "writable": [str(root)],
                "scratch_bytes": self.scratch_bytes,
                "owned_by_run": [str(root / "working"), str(root / "temp"),
                                 str(root / EXECUTED_FOLDER)],
                "read_only": [[str(folder / "input")] * 2, *binds]}
        (folder / "container").mkdir(exist_ok=True)
        (folder / "run.json").write_text(json.dumps(spec), encoding="utf-8")
        launcher = [sys.executable, "-I", jail.__file__, str(folder / "run.json"), "--"]
        pid_file = folder / "run.pid"
        pid_file.unlink(missing_ok=True)      # a past run's pid may be someone else's now
        worker = threading.get_ident()
        with self._pid_lock:
            self._pid_files[worker] = pid_file
        try:
            result = run_local(kernel, folder / "input", root=root, budget=budget,
                               network="guard" if isolated else "auto", launcher=launcher)
        except SandboxError as exc:
            return str(exc)
        finally:
            with self._pid_lock:
                self._pid_files.pop(worker, None)
        if self._stopping.is_set():
            raise RunStopped
        if result.timed_out:
            return f"the kernel ran past its {budget:g} s limit"
        if result.returncode != 0:   # a notebook's last line names the failed cell
            return f"the kernel exited with code {result.returncode}: {result.last_line()}"
        return None


@cache
def _python_prefixes() -> list[str]:
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return sorted({os.path.realpath(p) for p in prefixes} | prefixes)


def _lay_out_input(input_dir: Path, mounts: dict[str, Path], isolated: bool) -> list[list[str]]:
    """The run's input/ as Kaggle lays out /kaggle/input: in a container an empty folder per
    source, each bound read-only over it (returned as [mount point, source] pairs); without one,
    symlinks."""
    if input_dir.exists():
        shutil.rmtree(input_dir)     # unlinks symlinks, never follows them
    input_dir.mkdir(parents=True)
    binds = []
    for point, source in sorted(mounts.items()):
        target = input_dir / point
        target.parent.mkdir(parents=True, exist_ok=True)
        if isolated:
            target.mkdir()
            binds.append([str(target), str(source.resolve())])
        else:
            target.symlink_to(source.resolve(), target_is_directory=True)
    return binds


def log_as_json(log: Path) -> str:
    """The kernel log in the form the real service sends: a JSON array of stream records."""
    if log.is_symlink() or not log.is_file():
        return ""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    return json.dumps([{"stream_name": "stdout", "time": 0, "data": line} for line in lines])
