"""The fan-out's state folder: what was pushed, what ran, what is verified, kept between runs.

    STATE/fanout.json          one record per shard ever pushed from here: its kernel, the
                               version pushed, attempts, the last failure and its log tail
    STATE/shards/NAME/         a shard's verified output (shard.json and its arrays), moved into
                               place whole (os.replace of a folder) once every check passed
    STATE/incoming/            downloads being checked; emptied at every start

Every write is atomic (a new file renamed over the old, a folder renamed into place), so Ctrl-C
or a crash at any moment leaves the state as it was before the write or after it, never between:
a shard folder that exists was verified whole. A shard's name is the hash of what it computes
(see `plan`), so the folders of other plans can sit side by side and are reused when the same
work comes back.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from inference_core.files import atomic_write

from ..errors import PredictError

STATE_FILE = "fanout.json"
STATE_FORMAT = 1
RUNNING, DONE, FAILED = "running", "done", "failed"


@dataclass
class ShardRecord:
    kernel: str = ""  # owner/slug
    version: int = 0  # the version last pushed
    attempts: int = 0  # pushes so far, over every run of the command
    status: str = ""  # RUNNING, DONE, FAILED, or "" (not pushed)
    failure: str = ""  # why the last attempt failed
    log_tail: str = ""  # the end of that attempt's log
    run_seconds: float = 0.0  # the kernel's own time, from its manifest
    session_seconds: float = 0.0  # from its push to its output checked (queue and start-up too)
    pushed_at: float = 0.0  # time.time() of the last push


@dataclass
class FanoutState:
    folder: Path
    records: dict[str, ShardRecord] = field(default_factory=dict)

    @classmethod
    def open(cls, folder: Path) -> FanoutState:
        """The state kept in `folder` (created when new); leftover downloads are removed."""
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise PredictError(f"--state {folder}: exists and is not a folder; pass a folder "
                               "for the fan-out's state (new, or one a fan-out made)")
        (folder / "shards").mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder / "incoming", ignore_errors=True)
        (folder / "incoming").mkdir()
        path = folder / STATE_FILE
        if not path.is_file():
            return cls(folder)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("format") != STATE_FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {STATE_FORMAT}")
            records = {name: ShardRecord(**record) for name, record in raw["shards"].items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise PredictError(f"{path}: not a fan-out state file this version reads ({exc}); "
                               "move it away to start over (verified shards in "
                               f"{folder / 'shards'} are kept and reused)") from None
        return cls(folder, records)

    def record(self, name: str) -> ShardRecord:
        return self.records.setdefault(name, ShardRecord())

    def save(self) -> None:
        raw = {"format": STATE_FORMAT,
               "shards": {name: asdict(record) for name, record in sorted(self.records.items())}}
        with atomic_write(self.folder / STATE_FILE, "w", encoding="utf-8") as handle:
            json.dump(raw, handle, indent=1)

    def shard_folder(self, name: str) -> Path:
        return self.folder / "shards" / name

    def incoming(self, name: str) -> Path:
        """A fresh, empty folder to download a shard's output into."""
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.folder / "incoming"))

    def commit(self, name: str, checked: Path) -> Path:
        """Move a checked download into place as the shard's output, in one rename."""
        target = self.shard_folder(name)
        if target.exists():   # an older copy that failed its check this run
            stale = self.incoming(f"{name}-stale")
            os.replace(target, stale / name)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(checked, target)
        return target

    def discard(self, name: str) -> None:
        """Remove a shard's output that no longer passes its check."""
        target = self.shard_folder(name)
        if target.exists():
            stale = self.incoming(f"{name}-stale")
            os.replace(target, stale / name)
            shutil.rmtree(stale, ignore_errors=True)
