"""The kernel's first moments, before torch is imported: the clock from the process start, the
config, the test ids and a fallback submission.

The budget counts from the process start (the interpreter, the bundle's unpacking and `import
torch` included), and a kernel whose start-up outlasts its budget must still leave a valid
submission. So the fallback submission (`fallback.write_fallback_submission`) is written the
moment the test ids are known, and the models' submission replaces it atomically once every row
is in. Nothing here imports torch: the entry imports the runner only after this.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .budget import Deadlines
from .config import EnsembleConfig
from .data import TestSet, find_input_root, resolve_test_set
from .errors import KernelError
from .fallback import fallback_classes, write_fallback_submission

Log = Callable[[str], None]


def process_age() -> float:
    """Seconds since this process started (Linux; 0 elsewhere): a kernel's budget also pays for
    interpreter start-up and `import torch`."""
    try:
        with open("/proc/self/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))  # field 22: start
    except (OSError, ValueError, IndexError):
        return 0.0


def make_log(start: float, stream=sys.stdout) -> Log:
    """Lines stamped with the seconds since the kernel started, flushed for Kaggle's log viewer."""

    def log(message: str) -> None:
        print(f"[{time.monotonic() - start:8.1f}s] {message}", file=stream, flush=True)

    return log


def start_submission(config: EnsembleConfig, working_dir: str | os.PathLike, log: Log
                     ) -> TestSet:
    """Find the test set, then write a fallback submission for its ids into `working_dir`: from
    here on a valid submission exists, whatever happens to the run."""
    input_root = find_input_root(config.input_roots)
    test_set = resolve_test_set(config.test, input_root, config.submission.id_column, log)
    log(f"test set: {len(test_set)} images in {test_set.folder}")
    classes, source = fallback_classes(config.submission, test_set.sample_submission)
    target = Path(working_dir) / config.submission.file
    write_fallback_submission(target, config.submission, test_set.ids, classes)
    log(f"fallback submission written: {target} ({len(test_set)} rows, labels from {source}); "
        "the models' submission replaces it")
    return test_set


def out_of_time(deadlines: Deadlines, log: Log, before: str) -> bool:
    """Whether the planning deadline has passed `before` the next step; if so a log line says
    that the fallback submission stands."""
    if deadlines.left() > 0:
        return False
    log(f"deadline guard: the budget's planning time ran out before {before}; the fallback "
        "submission stands")
    return True


@dataclass(frozen=True)
class KernelStart:
    """What the entry knows before torch is imported; the fallback submission is written."""

    config: EnsembleConfig
    test_set: TestSet
    started: float  # time.monotonic() at the process start: the budget counts from here
    deadlines: Deadlines
    log: Log


def start_kernel(raw: dict, working_dir: str | os.PathLike = ".") -> KernelStart:
    """Read the embedded config (plain JSON types) and the test ids, and write the fallback
    submission; a bad config or a missing test set raise their KernelError."""
    started = time.monotonic() - process_age()
    log = make_log(started)
    config = EnsembleConfig.from_dict(raw)
    budget = config.budget_seconds(os.environ)
    log(f"kernelpack start: budget {budget:g} s, {time.monotonic() - started:.1f} s of it "
        "spent before the config was read")
    deadlines = Deadlines.from_budget(started, budget, config.budget.margin)
    return KernelStart(config, start_submission(config, working_dir, log), started, deadlines,
                       log)


def exit_code(work: Callable[[], object]) -> int:
    """Run `work`: exit code 0, or 1 after one `kernel error:` line on stderr for a KernelError
    (a bad config's included)."""
    try:
        work()
    except KernelError as exc:
        print(f"kernel error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
