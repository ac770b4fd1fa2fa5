"""Kaggle's fixed file names, and the one rule that turns a name into a slug and a title.

Light on purpose (no kaggle, no requests): the CLI reads it while it builds its parser. The
9-hour run limit is `inference_core.config.KAGGLE_RUN_SECONDS`, shared with the kernel."""

from __future__ import annotations

import re

# Sends every call to another service (a local one, `kernelpack serve-kaggle`) instead of Kaggle.
URL_ENV = "KERNELPACK_KAGGLE_URL"
DATASET_METADATA = "dataset-metadata.json"
KERNEL_METADATA = "kernel-metadata.json"
MODEL_METADATA = "model-metadata.json"
MODEL_INSTANCE_METADATA = "model-instance-metadata.json"


def slug_of(name: str) -> str:
    """A Kaggle slug from a file or folder name: lower case, '-' for anything but letters and
    digits (`My_Models` -> `my-models`)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def title_of(slug: str) -> str:
    """The default title of a dataset or kernel slug (`my-models` -> `My Models`)."""
    return slug.replace("-", " ").title()
