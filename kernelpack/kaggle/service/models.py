"""Kaggle Models: a model, its instances (one per framework and variation) and their versions,
as the client's `models`, `models instances` and `models instances versions` commands use them.
A version is READY `processing_seconds` after creation; until then it lists no files.

Layout: `ROOT/models/OWNER/MODEL/model.json` (the model's record),
`ROOT/models/OWNER/MODEL/FRAMEWORK/VARIATION/instance.json` (the instance's, with its versions'
per-file size and sha256) and `ROOT/models/OWNER/MODEL/FRAMEWORK/VARIATION/N/` (version N's
files). FRAMEWORK is the lower-case key (`pytorch`), as Kaggle mounts it.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..model_handles import ModelHandle, framework_key, parse_source, slug_problem, wire_name
from .blobs import BlobStore
from .store import Store, append_version, is_ready
from .wire import ApiError, timestamp

# The most files one page of a version's file listing holds (the client asks for 20 by default).
MAX_PAGE_SIZE = 1000


def _slug(request: dict, key: str, what: str) -> str:
    value = request.get(key, "")
    problem = slug_problem(what, value)
    if problem:
        raise ApiError(400, f"invalid {key}: {problem}")
    return value


def _text(request: dict, key: str) -> str:
    value = request.get(key) or ""
    if not isinstance(value, str):
        raise ApiError(400, f"{key} must be a string, got {type(value).__name__}")
    return value


def _handle(request: dict, variation_key: str = "instanceSlug") -> ModelHandle:
    """The instance a request names (owner, model, framework, variation), each checked."""
    framework = request.get("framework")
    key = framework_key(framework) if isinstance(framework, str) else None
    if key is None:
        raise ApiError(400, f"unknown framework {framework!r}: send a ModelFramework name such "
                            "as MODEL_FRAMEWORK_PY_TORCH")
    return ModelHandle(_slug(request, "ownerSlug", "owner"), _slug(request, "modelSlug", "model"),
                       key, _slug(request, variation_key, "variation"))


class Models:
    def __init__(self, store: Store, blobs: BlobStore, processing_seconds: float) -> None:
        self.store = store
        self.blobs = blobs
        self.processing_seconds = processing_seconds

    def _model(self, owner: str, model: str, user: str) -> dict:
        return self.store.record("model", owner, model, user)

    def _instance(self, handle: ModelHandle, user: str) -> dict:
        self._model(handle.owner, handle.model, user)
        record = self.store.read(*self._parts(handle), "instance.json")
        if record is None:
            raise ApiError(404, f"model instance {handle.instance} not found")
        return record

    @staticmethod
    def _parts(handle: ModelHandle) -> tuple[str, ...]:
        return "models", handle.owner, handle.model, handle.framework, handle.variation

    def _url(self, base_url: str, handle: ModelHandle) -> str:
        return f"{base_url}/models/{handle.instance}"

    def _own(self, handle: ModelHandle, user: str) -> None:
        if handle.owner != user:
            raise ApiError(403, f"user {user} cannot change models of {handle.owner}")

    def _add_version(self, handle: ModelHandle, record: dict, files: object, notes: str) -> int:
        number = len(record["versions"]) + 1
        entries = self.blobs.claim_files(files, self.store.path(*self._parts(handle), str(number)),
                                         f"model instance {handle.instance}")
        append_version(record, entries, notes, self.processing_seconds)
        self.store.write(record, *self._parts(handle), "instance.json")
        return number

    def create(self, user: str, request: dict, base_url: str) -> dict:
        owner = _slug(request, "ownerSlug", "owner")
        slug = _slug(request, "slug", "model")
        if owner != user:
            raise ApiError(403, f"user {user} cannot create models for {owner}")
        with self.store.lock:
            if self.store.read("models", owner, slug, "model.json") is not None:
                return {"id": 0, "error": f"The requested slug {slug!r} is already in use by a "
                                          "model; push a new instance or version to it instead"}
            record = {"id": self.store.next_id("model"), "title": _text(request, "title") or slug,
                      "subtitle": _text(request, "subtitle"),
                      "description": _text(request, "description"),
                      "isPrivate": bool(request.get("isPrivate", True)), "created": time.time()}
            self.store.write(record, "models", owner, slug, "model.json")
        return {"id": record["id"], "ref": f"{owner}/{slug}",
                "url": f"{base_url}/models/{owner}/{slug}"}

    def get(self, user: str, request: dict, base_url: str) -> dict:
        owner = _slug(request, "ownerSlug", "owner")
        slug = _slug(request, "modelSlug", "model")
        record = self._model(owner, slug, user)
        folder = self.store.path("models", owner, slug)
        instances = [self._describe(ModelHandle(owner, slug, path.parent.name, path.name),
                                    self.store.read("models", owner, slug, path.parent.name,
                                                    path.name, "instance.json"), base_url)
                     for path in sorted(folder.glob("*/*")) if (path / "instance.json").is_file()]
        return {"id": record["id"], "ref": f"{owner}/{slug}", "title": record["title"],
                "subtitle": record["subtitle"], "author": owner, "slug": slug,
                "isPrivate": record["isPrivate"], "description": record["description"],
                "url": f"{base_url}/models/{owner}/{slug}", "instances": instances}

    def _describe(self, handle: ModelHandle, record: dict, base_url: str) -> dict:
        """An ApiModelInstance: its newest version is the one `versionNumber` names."""
        latest = record["versions"][-1]
        return {"id": record["id"], "slug": handle.variation,
                "framework": wire_name(handle.framework), "fineTunable": record["fineTunable"],
                "overview": record["overview"], "usage": record["usage"],
                "licenseName": record["licenseName"], "versionNumber": latest["number"],
                "url": self._url(base_url, handle),
                "totalUncompressedBytes": sum(f["size"] for f in latest["files"])}

    def create_instance(self, user: str, request: dict, base_url: str) -> dict:
        body = request.get("body")
        if not isinstance(body, dict):
            raise ApiError(400, "CreateModelInstance: body must be a JSON object")
        handle = _handle({**body, "ownerSlug": request.get("ownerSlug", ""),
                          "modelSlug": request.get("modelSlug", "")})
        with self.store.lock:
            self._model(handle.owner, handle.model, user)
            self._own(handle, user)
            if self.store.read(*self._parts(handle), "instance.json") is not None:
                self.blobs.discard(body.get("files"))
                return {"id": 0, "error": f"model instance {handle.instance} already exists; "
                                          "push a new version to it instead"}
            if not _text(body, "licenseName"):
                raise ApiError(400, f"model instance {handle.instance}: licenseName is required")
            record = {"id": self.store.next_id("model-instance"),
                      "licenseName": _text(body, "licenseName"),
                      "overview": _text(body, "overview"), "usage": _text(body, "usage"),
                      "fineTunable": bool(body.get("fineTunable", False)), "versions": []}
            self._add_version(handle, record, body.get("files", []), "")
        return {"id": record["id"], "ref": handle.instance, "url": self._url(base_url, handle)}

    def create_version(self, user: str, request: dict, base_url: str) -> dict:
        handle = _handle(request)
        body = request.get("body")
        if not isinstance(body, dict):
            raise ApiError(400, "CreateModelInstanceVersion: body must be a JSON object")
        with self.store.lock:
            record = self._instance(handle, user)
            self._own(handle, user)
            number = self._add_version(handle, record, body.get("files", []),
                                       _text(body, "versionNotes"))
        return {"id": record["id"], "ref": handle.version(number),
                "url": f"{self._url(base_url, handle)}/{number}"}

    def get_instance(self, user: str, request: dict, base_url: str) -> dict:
        handle = _handle(request)
        return self._describe(handle, self._instance(handle, user), base_url)

    def list_files(self, user: str, request: dict, base_url: str) -> dict:
        """Files of the requested version, or of the newest READY one; none while processing."""
        handle = _handle(request)
        record = self._instance(handle, user)
        ready = [v for v in record["versions"] if is_ready(v)]
        wanted = request.get("versionNumber")
        if wanted is not None:
            if not any(v["number"] == int(wanted) for v in record["versions"]):
                raise ApiError(404, f"model instance {handle.instance} has no version {wanted}")
            ready = [v for v in ready if v["number"] == int(wanted)]
        files = [{"name": f["name"], "size": f["size"], "creationDate": timestamp(v["created"])}
                 for v in ready[-1:] for f in v["files"]]
        size = int(request.get("pageSize") or 20)
        start = int(request.get("pageToken") or 0)
        if not 0 < size <= MAX_PAGE_SIZE or start < 0:
            raise ApiError(400, f"pageSize must be 1 to {MAX_PAGE_SIZE} and pageToken one this "
                                "service handed out")
        following = start + size if start + size < len(files) else None
        return {"files": files[start:start + size],
                "nextPageToken": "" if following is None else str(following)}

    def ready_version(self, ref: str, user: str) -> tuple[str, Path] | None:
        """A kernel's model source OWNER/MODEL/FRAMEWORK/VARIATION/VERSION: where Kaggle mounts
        it under input/ and the folder of that version, if it exists, is READY and `user` may
        see it."""
        parsed = parse_source(ref)
        if parsed is None:
            return None
        handle, number = parsed
        try:
            record = self._instance(handle, user)
        except ApiError:
            return None
        if not any(v["number"] == number and is_ready(v)
                   for v in record["versions"]):
            return None
        return handle.mount_point(number), self.store.path(*self._parts(handle), str(number))
