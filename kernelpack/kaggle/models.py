"""Kaggle Model calls of `KaggleSession`: push a folder of weights as a model version (creating
the model and its instance when needed, skipped when unchanged), wait until the version lists
its files, and check that every file arrived with its size.

A handle is OWNER/MODEL/FRAMEWORK/VARIATION (see `model_handles`); a kernel names version N as
`OWNER/MODEL/FRAMEWORK/VARIATION/N` in `model_sources` and finds it under
`/kaggle/input/MODEL/FRAMEWORK/VARIATION/N/`. The client reads a model's settings from
model-metadata.json and an instance's from model-instance-metadata.json in the folder; when
absent they are written from the handle (a private model unless pushed `public`, Apache 2.0
weights), as dataset push writes dataset-metadata.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import KaggleError, KaggleNotFoundError
from ..metadata import MODEL_INSTANCE_METADATA, MODEL_METADATA, title_of
from .datasets import (
    MANIFEST_FILE,
    all_pages,
    local_dataset_files,
    local_digests,
    record_push,
    sizes_of,
    unchanged_since,
    verify_listed,
)
from .model_handles import FRAMEWORKS, ModelHandle, framework_key, parse_handle

# The license a new instance gets when the folder has no model-instance-metadata.json (the
# client's own template's).
DEFAULT_LICENSE = "Apache 2.0"
# How long a created version may take to show as the instance's newest.
NEW_VERSION_SECONDS = 120.0


@dataclass
class ModelPush:
    handle: str                 # OWNER/MODEL/FRAMEWORK/VARIATION
    version: int | None
    uploaded: list[str]
    skipped: bool               # unchanged since the last verified push: nothing uploaded
    verified: bool              # every local file is listed by the service with its size
    created: list[str] = field(default_factory=list)     # "model", "instance": made by this push
    mount_point: str = ""       # where a kernel finds it under /kaggle/input


class ModelCalls:
    """Mixed into `KaggleSession`, whose `call`, `wait`, `api` and `where` it uses."""

    def model_exists(self, handle: ModelHandle) -> bool:
        try:
            self.call(f"{handle.model_ref}: model", self.api.model_get, handle.model_ref,
                      retry=True)
        except KaggleNotFoundError:
            return False
        return True

    def model_current_version(self, handle: ModelHandle) -> int | None:
        """The instance's newest version number; None when the instance does not exist."""
        try:
            instance = self.call(f"{handle.instance}: model instance", self.api.model_instance_get,
                                 handle.instance, retry=True)
        except KaggleNotFoundError:
            return None
        return instance.version_number or None

    def model_version_files(self, handle: ModelHandle, number: int) -> dict[str, int]:
        """Name -> size of every file version `number` lists ({} while it is processing)."""
        ref = handle.version(number)

        def page(token: str | None) -> tuple[dict[str, int], str | None]:
            answer = self.call(f"{ref}: model files", self.api.model_instance_version_files, ref,
                               page_token=token, page_size=100, retry=True)
            if answer is None:      # the client answers None (and prints) for no files
                return {}, None
            return {item.name: item.size for item in answer.files or []}, answer.next_page_token

        return all_pages(page)

    def wait_model_version(self, handle: ModelHandle, number: int, timeout: float
                           ) -> dict[str, int]:
        """Wait until version `number` lists its files; returns them (name -> size)."""
        def listed() -> dict[str, int] | None:
            try:
                return self.model_version_files(handle, number) or None
            except KaggleNotFoundError:
                return None

        return self.wait(f"{handle.version(number)}: new model version", listed, timeout,
                         f"check later with `kaggle models instances versions files "
                         f"{handle.version(number)}`")

    def push_model(self, folder: str | Path, handle: str | ModelHandle, *,
                   message: str | None = None, wait: bool = False, public: bool = False,
                   timeout: float = 3600.0, progress: bool = False) -> ModelPush:
        """Create the model and its instance, or add a version; with `wait`, wait until the
        version lists its files and check that every local file is there with its size. An
        unchanged folder (same files as the last verified push, still the newest version) is
        skipped. `public`: a model created now is public (encrypted weights can be).
        `progress`: show the hashing and the upload as byte bars on stderr."""
        handle = parse_handle(handle) if isinstance(handle, str) else handle
        folder = Path(folder)
        local = local_digests(local_dataset_files(folder), handle.instance, progress)
        model_settings(folder, handle, public)
        instance_settings(folder, handle)
        current = self.model_current_version(handle)
        previous = unchanged_since(folder, handle.instance, local)
        if current and previous and self.model_version_files(handle, current) == sizes_of(local):
            return ModelPush(handle.instance, current, [], skipped=True, verified=True,
                             mount_point=handle.mount_point(current))
        created = self._upload(folder, handle, current, message,
                               sum(sizes_of(local).values()), progress)
        version = self._new_version_number(handle, current)
        push = ModelPush(handle.instance, version, sorted(local), skipped=False, verified=False,
                         created=created, mount_point=handle.mount_point(version))
        if not wait:
            return push
        verify_listed(handle.version(version), self.wait_model_version(handle, version, timeout),
                      local)
        record_push(folder, handle.instance, version, local)
        push.verified = True
        return push

    def _upload(self, folder: Path, handle: ModelHandle, current: int | None,
                message: str | None, total: int, progress: bool) -> list[str]:
        """Create what is missing (model, instance with version 1) or add a version; returns
        what was created."""
        created = []
        if current is None and not self.model_exists(handle):
            self._check_created(handle.model_ref, folder / MODEL_METADATA, self.call(
                f"{handle.model_ref}: model create", self.api.model_create_new, str(folder)))
            created.append("model")
        options = {"quiet": True, "ignore_patterns": [MANIFEST_FILE]}
        with self.api.reporting_uploads(total, f"upload {handle.instance}", progress):
            if current is None:
                self._check_created(handle.instance, folder / MODEL_INSTANCE_METADATA, self.call(
                    f"{handle.instance}: model instance create", self.api.model_instance_create,
                    str(folder), **options))
                created.append("instance")
            else:
                self._check_created(handle.instance, folder, self.call(
                    f"{handle.instance}: new model version",
                    self.api.model_instance_version_create, handle.instance, str(folder),
                    version_notes=message or "pushed with kernelpack", **options))
        return created

    def _new_version_number(self, handle: ModelHandle, current: int | None) -> int:
        """The number of the version just created: the instance's newest, once it is past
        `current` (a service may take a moment to list it)."""
        def newer() -> int | None:
            newest = self.model_current_version(handle)
            return newest if newest and newest > (current or 0) else None

        return self.wait(f"{handle.instance}: new version number", newer, NEW_VERSION_SECONDS,
                         f"{self.where} took the files but lists no new version; check "
                         f"`kaggle models instances get {handle.instance}` and push again if it "
                         "is not there")

    def _check_created(self, ref: str, fix: Path, answer: object) -> None:
        """The client reports a refused create in the answer (an `error`, id 0), not by raising."""
        error = getattr(answer, "error", None)
        if error or not getattr(answer, "id", None):
            reason = error or "it answered without an id"
            raise KaggleError(f"{ref}: {self.where} refused it: {reason}; fix {fix} and push "
                              "again")


def _settings(path: Path, defaults: dict, expected: dict, handle: ModelHandle) -> dict:
    """A metadata file the client reads: written from `defaults` when absent; when present, its
    `expected` fields must agree with the handle."""
    if not path.is_file():
        path.write_text(json.dumps(defaults, indent=2) + "\n", encoding="utf-8")
        return defaults
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise KaggleError(f"{path}: not valid JSON ({exc}); fix it or delete it to have it "
                          "written from --handle") from None
    if not isinstance(settings, dict):
        raise KaggleError(f"{path}: must be a JSON object; fix it or delete it")
    for key, value in expected.items():
        given = settings.get(key)
        # A framework matches in any spelling the client takes (pytorch, pyTorch, PY_TORCH).
        same = given == value if key != "framework" else \
            isinstance(given, str) and framework_key(given) == handle.framework
        if not same:
            raise KaggleError(f"{path}: {key} is {given!r} but --handle {handle.instance} says "
                              f"{value!r}; fix the file or --handle")
    return settings


def model_settings(folder: Path, handle: ModelHandle, public: bool = False) -> dict:
    """model-metadata.json: the model's owner, slug, title, privacy, description. `public`: a
    file written here makes the model public; one already there must say so too."""
    expected = {"ownerSlug": handle.owner, "slug": handle.model}
    path = folder / MODEL_METADATA
    settings = _settings(path, {
        **expected, "title": title_of(handle.model), "subtitle": "", "isPrivate": not public,
        "description": f"Weights pushed with kernelpack as {handle.instance}.",
        "publishTime": "", "provenanceSources": ""}, expected, handle)
    if public and settings.get("isPrivate", True) is not False:
        raise KaggleError(f"{path}: isPrivate is {settings.get('isPrivate', True)!r} but "
                          "--public was given; set \"isPrivate\": false in it, or drop --public")
    return settings


def instance_settings(folder: Path, handle: ModelHandle) -> dict:
    """model-instance-metadata.json: the instance's owner, model, variation, framework, license."""
    expected = {"ownerSlug": handle.owner, "modelSlug": handle.model,
                "instanceSlug": handle.variation, "framework": FRAMEWORKS[handle.framework]}
    return _settings(folder / MODEL_INSTANCE_METADATA, {
        **expected, "overview": "", "usage": "", "licenseName": DEFAULT_LICENSE,
        "fineTunable": False, "trainingData": [], "modelInstanceType": "Unspecified",
        "baseModelInstance": "", "externalBaseModelUrl": ""}, expected, handle)
