"""Kaggle's fixed names and limits, and the one rule that turns a name into a slug and a title.

Light on purpose (no kaggle, no requests): the CLI reads it while it builds its parser."""

from __future__ import annotations

import re

from inference_core.config import KAGGLE_RUN_SECONDS

# Sends every call to another service (a local one, `kernelpack serve-kaggle`) instead of Kaggle.
URL_ENV = "KERNELPACK_KAGGLE_URL"
DATASET_METADATA = "dataset-metadata.json"
KERNEL_METADATA = "kernel-metadata.json"
# Kaggle stops a kernel's run after this many seconds (9 hours); also the longest wait for one.
RUN_SECONDS = KAGGLE_RUN_SECONDS


def slug_of(name: str) -> str:
    """A Kaggle slug from a file or folder name: lower case, '-' for anything but letters and
    digits (`My_Models` -> `my-models`)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def title_of(slug: str) -> str:
    """The default title of a dataset or kernel slug (`my-models` -> `My Models`)."""
    return slug.replace("-", " ").title()
