"""Dataset calls of `KaggleSession`: push a folder (create or add a version, skipped when
unchanged), wait until it is ready, and check that every file arrived with its size."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference_core.files import sha256_file

from ..errors import KaggleError, KaggleNotFoundError, KaggleUploadError
from ..metadata import (
    DATASET_METADATA,
    KERNEL_METADATA,
    MODEL_INSTANCE_METADATA,
    MODEL_METADATA,
    dataset_metadata,
)
from ..progress import byte_bar, sha256_with_progress

# What was last pushed and verified from a dataset folder; lets an unchanged folder skip the
# upload. It lives in the folder and is never uploaded.
MANIFEST_FILE = ".kernelpack-manifest.json"
# Files the client never uploads from a dataset folder (kaggle-api.md §3.4), plus our manifest.
_NOT_DATA = {DATASET_METADATA, "datapackage.json", KERNEL_METADATA, MODEL_METADATA,
             MODEL_INSTANCE_METADATA, MANIFEST_FILE}


@dataclass
class DatasetPush:
    ref: str
    version: int | None
    uploaded: list[str]
    skipped: bool       # unchanged since the last verified push: nothing uploaded
    verified: bool      # every local file is listed by the service with its size


def file_digest(path: Path, bar: Any = None) -> dict:
    """Size and sha256 of a file; hashing it advances `bar` (a byte bar), if given."""
    digest = sha256_file(path) if bar is None else sha256_with_progress(path, bar)
    return {"size": path.stat().st_size, "sha256": digest}


def local_digests(files: list[Path], what: str, progress: bool) -> dict[str, dict]:
    """name -> file_digest of each file, hashed before an upload; `progress`: a byte bar on
    stderr (every file is read whole, which takes a while for gigabytes)."""
    with byte_bar(sum(path.stat().st_size for path in files), f"hash {what}", progress) as bar:
        return {path.name: file_digest(path, bar) for path in files}


class DatasetCalls:
    """Mixed into `KaggleSession`, whose `call`, `wait`, `api`, `where` and `username` it uses."""

    def dataset_exists(self, ref: str) -> bool:
        try:
            self.call(f"{ref}: dataset status", self.api.dataset_status, ref, retry=True)
        except KaggleNotFoundError:
            return False
        return True

    def dataset_status(self, ref: str) -> str:
        """`ready`, `blobs_received`, ..., as the client names DatabundleVersionStatus."""
        return self.call(f"{ref}: dataset status", self.api.dataset_status, ref, retry=True)

    def dataset_files(self, ref: str) -> dict[str, int]:
        """Name -> size of every file the service lists for the newest ready version (or, for
        `OWNER/SLUG/N`, for version N)."""
        def page(token: str | None) -> tuple[dict[str, int], str | None]:
            answer = self.call(f"{ref}: dataset files", self.api.dataset_list_files, ref,
                               page_token=token, retry=True)
            return ({item.name: item.total_bytes for item in answer.files or []},
                    answer.next_page_token)

        return all_pages(page)

    def wait_dataset(self, ref: str, timeout: float) -> None:
        def ready() -> bool | None:
            status = self.dataset_status(ref)
            if status in ("failed", "deleted"):
                raise KaggleError(f"{ref}: the new version ended {status} on {self.where}; "
                                  "push again")
            return True if status == "ready" else None

        self.wait(f"{ref}: new version", ready, timeout,
                  f"check later with `kaggle datasets status {ref}`")

    def push_dataset(self, folder: str | Path, *, public: bool = False,
                     message: str | None = None, wait: bool = False,
                     dataset_id: str | None = None, title: str | None = None,
                     timeout: float = 3600.0, progress: bool = False) -> DatasetPush:
        """Create the dataset or add a version; with `wait`, wait until it is ready and check that
        every local file is listed with its size. An unchanged folder (same files as the last
        verified push, still listed by the service) is skipped. `progress`: show the upload as
        a byte bar on stderr."""
        folder = Path(folder)
        files = local_dataset_files(folder)
        metadata = dataset_metadata(folder, dataset_id, title, default_owner=self.username)
        ref = metadata["id"]
        local = local_digests(files, ref, progress)
        previous = unchanged_since(folder, ref, local)
        exists = self.dataset_exists(ref)
        if exists and previous and self.dataset_files(ref) == sizes_of(local):
            return DatasetPush(ref, previous["version"], [], skipped=True, verified=True)
        # Another push may add versions beside this one: ours is after this and at most the
        # one the service calls current right after our create.
        before = self.dataset_version(ref) if exists else 0
        options = {"quiet": True, "ignore_patterns": [MANIFEST_FILE]}
        with self.api.reporting_uploads(sum(sizes_of(local).values()), f"upload {ref}",
                                        progress):
            if exists:
                answer = self.call(f"{ref}: new dataset version", self.api.dataset_create_version,
                                   str(folder), message or "pushed with kernelpack", **options)
            else:
                answer = self.call(f"{ref}: dataset create", self.api.dataset_create_new,
                                   str(folder), public=public, **options)
        if (answer.status or "").lower() != "ok":
            raise KaggleError(f"{ref}: {self.where} refused the dataset: {answer.error}; fix "
                              f"{folder / DATASET_METADATA} and push again")
        version = self.dataset_version(ref)
        push = DatasetPush(ref, version, sorted(local), skipped=False, verified=False)
        if not wait:
            return push
        self.wait_dataset(ref, timeout)
        push.version = version = self.own_version(ref, before, version, local)
        record_push(folder, ref, version, local)
        push.verified = True
        return push

    def verify_dataset(self, ref: str, local: dict[str, dict]) -> None:
        verify_listed(ref, self.dataset_files(ref), local)

    def dataset_version(self, ref: str) -> int:
        """The number of the dataset's newest version."""
        return json.loads(self.call(f"{ref}: dataset version", self.api.dataset_status, ref,
                                    format="json(current_version_number)", retry=True)
                          )["current_version_number"]

    def own_version(self, ref: str, before: int, after: int, local: dict[str, dict]) -> int:
        """The version this push created, verified: the newest of versions `before`+1 ..
        `after` that lists every local file with its size. Another push to the same dataset
        may have added versions among them (and the newest version may be another push's)."""
        listings = {}
        for number in range(after, before, -1):
            listings[number] = self.dataset_files(f"{ref}/{number}")
            if all(listings[number].get(name) == digest["size"]
                   for name, digest in local.items()):
                return number
        if len(listings) <= 1:
            verify_listed(ref, listings.get(after, {}), local)
        raise KaggleUploadError(
            f"{ref}: none of versions {before + 1} to {after} holds this folder's files with "
            f"their sizes (another push added versions meanwhile, so which one is this push's "
            "cannot be told); check `kaggle datasets files` for each, then push again")


def all_pages(page: Callable[[str | None], tuple[dict[str, int], str | None]]) -> dict[str, int]:
    """Name -> size over every page of a file listing; `page(token)` is one page and the next
    token (None or '' after the last)."""
    files: dict[str, int] = {}
    token = None
    while True:
        listed, token = page(token)
        files.update(listed)
        if not token:
            return files


def sizes_of(local: dict[str, dict]) -> dict[str, int]:
    return {name: digest["size"] for name, digest in local.items()}


def verify_listed(ref: str, listed: dict[str, int], local: dict[str, dict]) -> None:
    """Every local file (name -> file_digest) is listed by the service with its size."""
    wrong = [f"{name} ({'missing' if name not in listed else f'{listed[name]} bytes'}, "
             f"expected {digest['size']})"
             for name, digest in sorted(local.items()) if listed.get(name) != digest["size"]]
    if wrong:
        raise KaggleUploadError(f"{ref}: the new version lacks or truncates "
                                f"{', '.join(wrong)}; push again")


def unchanged_since(folder: Path, ref: str, local: dict[str, dict]) -> dict | None:
    """The manifest of the last verified push of `ref` from `folder` when its files (names,
    sizes, hashes) are still the same; the caller checks that the service still lists them."""
    previous = _read_manifest(folder / MANIFEST_FILE)
    return previous if previous and previous.get("id") == ref and previous["files"] == local \
        else None


def record_push(folder: Path, ref: str, version: int, local: dict[str, dict]) -> None:
    """Remember a verified push in `folder`, so that pushing it unchanged is skipped."""
    (folder / MANIFEST_FILE).write_text(json.dumps(
        {"id": ref, "version": version, "files": local}, indent=1, sort_keys=True) + "\n")


def _read_manifest(path: Path) -> dict | None:
    """The last verified push; an unreadable manifest only means the upload is not skipped."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "files" in manifest else None


def local_dataset_files(folder: Path) -> list[Path]:
    """The files the client will upload from `folder`; sub-folders are refused, not skipped."""
    if not folder.is_dir():
        raise KaggleError(f"{folder}: not a folder; pass the folder that holds the dataset files")
    entries = sorted(p for p in folder.iterdir() if p.name not in _NOT_DATA)
    folders = [p.name for p in entries if p.is_dir()]
    if folders:
        raise KaggleError(f"{folder}: holds sub-folders {folders}, which the kaggle client does "
                          "not upload; move their files to the top level or zip them")
    if not entries:
        raise KaggleError(f"{folder}: no files to upload")
    return entries
