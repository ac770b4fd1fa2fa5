"""A local Kaggle service that the real `kaggle` client talks to, for rehearsals and tests.

It speaks the client's wire protocol for what kernelpack
uses: resumable blob uploads, dataset create/version/status/files, kernel push/status/output,
code submissions re-run on a hidden test set and scored, and the submissions list. State lives on
disk under one root folder; faults (429 with Retry-After, 503 mid-upload, dropped connections) and
a slow processing state can be injected. Every call needs a known user's key or token
(`accounts.py`); each kernel run gets a container of its own with only its sources, read-only
(`jail.py`, where the machine allows it).
"""

from .competitions import add_competition
from .faults import Fault, parse_fault
from .server import KaggleService

__all__ = ["Fault", "KaggleService", "add_competition", "parse_fault"]
