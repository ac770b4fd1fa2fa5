"""Faults injected on request: an HTTP status (429 comes with Retry-After) or a dropped connection.

A fault targets an RPC method (`StartBlobUpload`, `CreateDatasetVersion`, ...) or `upload`, the
blob PUTs; on an upload it strikes mid-way: half of the bytes are kept, so the client can resume.
Spec form, for `kernelpack serve-kaggle --fault`: `KIND:TARGET[:COUNT]`, e.g. `429:SaveKernel`,
`503:upload:2`, `drop:CreateDataset`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ...errors import KaggleServiceError

DROP = "drop"
# Seconds the client is told to wait after a 429; the client honours it.
RETRY_AFTER_SECONDS = 1


@dataclass
class Fault:
    kind: str      # an HTTP status code ("429", "503", ...) or "drop"
    target: str    # an RPC method name, or "upload"
    count: int = 1


def parse_fault(spec: str) -> Fault:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
        raise KaggleServiceError(f"fault {spec!r}: expected KIND:TARGET[:COUNT], "
                                 "e.g. 429:SaveKernel")
    kind, target = parts[0], parts[1]
    if kind != DROP and not (kind.isdigit() and 400 <= int(kind) <= 599):
        raise KaggleServiceError(f"fault {spec!r}: KIND must be an HTTP error status "
                                 "(400-599) or 'drop'")
    count = parts[2] if len(parts) == 3 else "1"
    if not count.isdigit() or int(count) < 1:
        raise KaggleServiceError(f"fault {spec!r}: COUNT must be a positive integer")
    return Fault(kind, target, int(count))


class FaultPlan:
    """Pending faults; each strikes `count` times on its target, then is gone."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def take(self, target: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.target == target:
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)
