"""The service's state on disk: JSON records written atomically under one lock, and counters."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from inference_core.files import atomic_write

from .wire import ApiError, check_name


class Store:
    """`ROOT/<relative path>.json` records; every read-modify-write holds `lock`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        # It holds the signing secret, the users' keys and kernels that embed decryption keys:
        # only its owner may enter it, and its records are owner-only from their first byte.
        self.root.chmod(0o700)
        self.lock = threading.RLock()

    def path(self, *parts: str) -> Path:
        # Parts come from requests (owner, slug, ...): none may climb out of its folder.
        return self.root.joinpath(*(check_name(part, "name") for part in parts))

    def read(self, *parts: str) -> Any:
        path = self.path(*parts)
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def record(self, kind: str, owner: str, slug: str, user: str) -> dict:
        """A dataset or kernel record (`kind` "dataset" or "kernel") as `user` sees it;
        someone else's private one is as missing as one that does not exist, as on Kaggle."""
        record = self.read(f"{kind}s", owner, slug, f"{kind}.json")
        if record is None or (record["isPrivate"] and owner != user):
            raise ApiError(404, f"{kind} {owner}/{slug} not found")
        return record

    def write(self, data: Any, *parts: str) -> None:
        path = self.path(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A crash never leaves half a record behind.
        with atomic_write(path, "w", encoding="utf-8", private=True) as handle:
            json.dump(data, handle, indent=1, sort_keys=True)

    def next_id(self, name: str) -> int:
        with self.lock:
            counters = self.read("counters.json") or {}
            counters[name] = counters.get(name, 0) + 1
            self.write(counters, "counters.json")
            return counters[name]


def append_version(record: dict, entries: list[dict], notes: str, ready_in: float) -> None:
    """Add the next version of a dataset or model instance `record`, holding `entries` (claimed
    uploads); it is READY `ready_in` seconds from now."""
    now = time.time()
    record["versions"].append({"number": len(record["versions"]) + 1, "created": now,
                               "notes": notes, "readyAt": now + ready_in, "files": entries})


def is_ready(version: dict) -> bool:
    """Whether a version `append_version` made has finished processing."""
    return version["readyAt"] <= time.time()
