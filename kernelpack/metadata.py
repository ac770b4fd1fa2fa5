"""Kaggle's metadata files: their fixed names, the one rule that turns a name into a slug and a
title, and a dataset folder's dataset-metadata.json. Shared by the kernel build (kernel-metadata,
wheel datasets) and the Kaggle commands, below both.

Light on purpose (no kaggle, no requests): the CLI reads it while it builds its parser. The
9-hour run limit is `inference_core.config.KAGGLE_RUN_SECONDS`, shared with the kernel."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import KaggleError

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


def is_owner_slug(value: str) -> bool:
    """`OWNER/slug`, as Kaggle names a dataset: the slug in lower case, digits and '-'."""
    owner, _, slug = value.partition("/")
    return bool(re.fullmatch(r"[A-Za-z0-9_-]+", owner) and slug and slug_of(slug) == slug)


def dataset_metadata(folder: Path, dataset_id: str | None, title: str | None, *,
                     default_owner: str) -> dict:
    """The folder's dataset-metadata.json; when absent, written from `dataset_id` (default:
    OWNER/FOLDER-NAME) and `title`."""
    path = folder / DATASET_METADATA
    if path.is_file():
        try:
            metadata = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise KaggleError(f"{path}: not valid JSON ({exc}); fix it or delete it to have it "
                              "written from --id/--title") from None
        if not isinstance(metadata, dict) or not is_owner_slug(str(metadata.get("id", ""))):
            raise KaggleError(f"{path}: id must be 'owner/dataset-slug' (lower case, digits and "
                              "'-'); fix it")
        if dataset_id and metadata["id"] != dataset_id:
            raise KaggleError(f"{path}: id is {metadata['id']!r} but --id says {dataset_id!r}; "
                              "drop --id or fix the file")
        return metadata
    if dataset_id is not None and not is_owner_slug(dataset_id):  # before anything is written
        raise KaggleError(f"--id {dataset_id!r}: must be OWNER/dataset-slug (lower case, digits "
                          "and '-')")
    dataset_id = dataset_id or f"{default_owner}/{slug_of(folder.resolve().name)}"
    metadata = {"id": dataset_id, "title": title or title_of(dataset_id.partition("/")[2]),
                "licenses": [{"name": "CC0-1.0"}]}
    path.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return metadata
