"""Kernel runs, one at a time on a worker thread: each waits `processing_seconds` in the queue
(the QUEUED state a client sees), then runs offline in the sandbox."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from inference_core.config import KAGGLE_RUN_SECONDS

from ...errors import SandboxError
from ...sandbox import run_local


class Runner:
    def __init__(self, processing_seconds: float) -> None:
        self.processing_seconds = processing_seconds
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="kaggle-service-runner",
                                        daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def wait_idle(self) -> None:
        """Block until every queued run has finished."""
        self._jobs.join()

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                time.sleep(self.processing_seconds)
                job()
            finally:
                self._jobs.task_done()


def run_in_sandbox(kernel: Path, input_dir: Path, root: Path, budget: float | None) -> str | None:
    """Run offline under `root` (log in `kernel.log`, outputs in `working/`); returns why the
    run failed, or None."""
    # Kaggle's limit for a batch session, unless the push set `sessionTimeoutSeconds`.
    budget = budget or KAGGLE_RUN_SECONDS
    try:
        result = run_local(kernel, input_dir, root=root, budget=budget)
    except SandboxError as exc:
        return str(exc)
    if result.timed_out:
        return f"the kernel ran past its {budget:g} s limit"
    if result.returncode != 0:
        last = result.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
        return f"the kernel exited with code {result.returncode}: {''.join(last)}"
    return None


def log_as_json(log: Path) -> str:
    """The kernel log in the form the real service sends: a JSON array of stream records."""
    if not log.is_file():
        return ""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    return json.dumps([{"stream_name": "stdout", "time": 0, "data": line} for line in lines])
