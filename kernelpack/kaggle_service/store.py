"""The service's state on disk: JSON records written atomically under one lock, and counters."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from .wire import check_name


class Store:
    """`ROOT/<relative path>.json` records; every read-modify-write holds `lock`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    def path(self, *parts: str) -> Path:
        # Parts come from requests (owner, slug, ...): none may climb out of its folder.
        return self.root.joinpath(*(check_name(part, "name") for part in parts))

    def read(self, *parts: str) -> Any:
        path = self.path(*parts)
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def visible(self, user: str, owner: str, *parts: str) -> dict | None:
        """A dataset or kernel record as `user` sees it: someone else's private one reads as
        missing, as on Kaggle."""
        record = self.read(*parts)
        return None if record is None or (record["isPrivate"] and owner != user) else record

    def write(self, data: Any, *parts: str) -> None:
        path = self.path(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a crash never leaves half a record behind.
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)

    def next_id(self, name: str) -> int:
        with self.lock:
            counters = self.read("counters.json") or {}
            counters[name] = counters.get(name, 0) + 1
            self.write(counters, "counters.json")
            return counters[name]
