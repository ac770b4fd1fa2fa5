"""Datasets: create, version, status, files. A version is READY `processing_seconds` after creation.

Layout: `ROOT/datasets/OWNER/SLUG/dataset.json` (the record, versions with per-file size and
sha256) and `ROOT/datasets/OWNER/SLUG/N/` (the files of version N).
"""

from __future__ import annotations

from pathlib import Path

from .blobs import BlobStore
from .store import Store, append_version, is_ready
from .wire import ApiError, check_name, timestamp


def _text(request: dict, key: str, default: str | None) -> str | None:
    value = request.get(key, default)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"{key} must be a string, got {type(value).__name__}")
    return value


class Datasets:
    def __init__(self, store: Store, blobs: BlobStore, processing_seconds: float) -> None:
        self.store = store
        self.blobs = blobs
        self.processing_seconds = processing_seconds

    def record(self, owner: str, slug: str, user: str) -> dict:
        return self.store.record("dataset", owner, slug, user)

    def version_dir(self, owner: str, slug: str, number: int) -> Path:
        return self.store.path("datasets", owner, slug, str(number))

    def latest_ready(self, owner: str, slug: str, user: str) -> Path | None:
        """The folder of the newest READY version, for mounting into a kernel run."""
        record = self.record(owner, slug, user)
        ready = [v for v in record["versions"] if is_ready(v)]
        return self.version_dir(owner, slug, ready[-1]["number"]) if ready else None

    def _add_version(self, owner: str, slug: str, record: dict, files: list[dict],
                     notes: str | None) -> None:
        number = len(record["versions"]) + 1
        entries = self.blobs.claim_files(files, self.version_dir(owner, slug, number),
                                         f"dataset {owner}/{slug}")
        append_version(record, entries, notes or "", self.processing_seconds)
        self.store.write(record, "datasets", owner, slug, "dataset.json")

    def create(self, user: str, request: dict, base_url: str) -> dict:
        owner = check_name(request.get("ownerSlug", ""), "owner")
        slug = check_name(request.get("slug", ""), "dataset slug")
        if owner != user:
            raise ApiError(403, f"user {user} cannot create datasets for {owner}")
        with self.store.lock:
            if self.store.read("datasets", owner, slug, "dataset.json") is not None:
                # Answered, not raised: the client then drops its uploads, and so do we.
                self.blobs.discard(request.get("files"))
                return {"status": "error", "error": f"The requested slug {slug!r} is already in "
                                                    "use by a dataset (another push created it "
                                                    "first); push again to add your files as a "
                                                    "new version"}
            record = {"id": self.store.next_id("dataset"),
                      "title": _text(request, "title", slug),
                      "licenseName": _text(request, "licenseName", ""),
                      "isPrivate": bool(request.get("isPrivate", False)),
                      "subtitle": _text(request, "subtitle", None),
                      "description": _text(request, "description", None),
                      "versions": []}
            self._add_version(owner, slug, record, request.get("files", []), None)
        return {"ref": f"{owner}/{slug}", "url": f"{base_url}/datasets/{owner}/{slug}",
                "status": "ok"}

    def create_version(self, user: str, request: dict, base_url: str) -> dict:
        owner = check_name(request.get("ownerSlug", ""), "owner")
        slug = check_name(request.get("datasetSlug", ""), "dataset slug")
        body = request.get("body", {})
        if not isinstance(body, dict):
            raise ApiError(400, "CreateDatasetVersion: body must be a JSON object")
        _text(body, "versionNotes", None)
        with self.store.lock:
            record = self.record(owner, slug, user)
            if owner != user:
                raise ApiError(403, f"user {user} cannot add versions to {owner}/{slug}")
            self._add_version(owner, slug, record, body.get("files", []), body.get("versionNotes"))
        return {"ref": f"{owner}/{slug}", "url": f"{base_url}/datasets/{owner}/{slug}",
                "status": "ok"}

    def status(self, user: str, request: dict, base_url: str) -> dict:
        record = self.record(request.get("ownerSlug", ""), request.get("datasetSlug", ""), user)
        ready = is_ready(record["versions"][-1])
        return {"status": "READY" if ready else "BLOBS_RECEIVED"}

    def get(self, user: str, request: dict, base_url: str) -> dict:
        owner, slug = request.get("ownerSlug", ""), request.get("datasetSlug", "")
        record = self.record(owner, slug, user)
        latest = record["versions"][-1]
        return {"id": record["id"], "ref": f"{owner}/{slug}", "title": record["title"],
                "subtitle": record["subtitle"], "description": record["description"],
                "isPrivate": record["isPrivate"], "licenseName": record["licenseName"],
                "ownerRef": owner, "url": f"{base_url}/datasets/{owner}/{slug}",
                "currentVersionNumber": latest["number"],
                "totalBytes": sum(f["size"] for f in latest["files"]),
                "lastUpdated": timestamp(latest["created"]),
                "versions": [{"versionNumber": v["number"], "creationDate": timestamp(v["created"]),
                              "versionNotes": v["notes"],
                              "status": "ready" if is_ready(v) else "processing"}
                             for v in reversed(record["versions"])]}

    def list_files(self, user: str, request: dict, base_url: str) -> dict:
        """Files of the requested version, or of the newest READY one (none while processing)."""
        owner, slug = request.get("ownerSlug", ""), request.get("datasetSlug", "")
        record = self.record(owner, slug, user)
        wanted = request.get("datasetVersionNumber")
        if wanted is not None:
            versions = [v for v in record["versions"] if v["number"] == int(wanted)]
            if not versions:
                raise ApiError(404, f"dataset {owner}/{slug} has no version {wanted}")
        else:
            versions = [v for v in record["versions"] if is_ready(v)][-1:]
        files = versions[0]["files"] if versions else []
        return {"datasetFiles": [
            {"ref": f"{owner}/{slug}/{f['name']}", "datasetRef": f"{owner}/{slug}",
             "ownerRef": owner, "name": f["name"], "totalBytes": f["size"],
             "creationDate": timestamp(versions[0]["created"])} for f in files]}
