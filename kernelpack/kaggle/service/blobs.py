"""Blob uploads with the resumable protocol the client speaks (GCS-style, see kaggle-api.md §3.3).

`StartBlobUpload` hands out a token and an `http://` URL; the client PUTs the bytes there. A PUT
with `Content-Range: bytes */N` and no body asks how much arrived: 200 when all of it, else 308
with `Range: bytes=0-LAST` (no Range when nothing arrived). A PUT with `Content-Range:
bytes S-E/N` appends from S. Partial bytes live in `ROOT/blobs/TOKEN.part` and survive restarts.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import BinaryIO

from .store import Store
from .wire import ApiError, check_name

_RANGE = re.compile(r"^bytes (?:\*|(\d+)-(\d+))/(\d+)$")
_CHUNK = 1 << 20


def _drain(body: BinaryIO, length: int) -> None:
    """Read what is left of a request body, so the connection stays usable."""
    while length > 0 and (chunk := body.read(min(length, _CHUNK))):
        length -= len(chunk)


class BlobStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _part(self, token: str) -> Path:
        return self.store.path("blobs", f"{token}.part")

    def start(self, request: dict, base_url: str) -> dict:
        name = check_name(request.get("name", ""), "file name")
        length = int(request.get("contentLength", 0))
        token = secrets.token_hex(12)
        with self.store.lock:
            self.store.write({"name": name, "length": length}, "blobs", f"{token}.json")
            self._part(token).touch()
        return {"token": token, "createUrl": f"{base_url}/upload/{token}"}

    def _record(self, token: str) -> dict:
        if not re.fullmatch(r"[0-9a-f]+", token):
            raise ApiError(404, f"upload {token!r} not found")
        record = self.store.read("blobs", f"{token}.json")
        if record is None:
            raise ApiError(404, f"upload {token} not found or expired; start the upload again")
        return record

    def received(self, token: str) -> int:
        return self._part(token).stat().st_size

    def put(self, token: str, content_range: str | None, body: BinaryIO, length: int,
            keep: int | None = None) -> tuple[int, dict]:
        """Store one PUT of `length` bytes read from `body` (only the first `keep` of them when
        a fault strikes mid-upload); returns the HTTP status (200 complete, 308 incomplete) and
        headers. The body is streamed to disk, so weights files need not fit in memory."""
        record = self._record(token)
        have = self.received(token)
        start = 0
        if content_range:
            match = _RANGE.match(content_range.strip())
            if not match or int(match[3]) != record["length"]:
                raise ApiError(400, f"bad Content-Range {content_range!r} for a "
                                    f"{record['length']}-byte upload")
            if match[1] is None:     # a probe: how much arrived?
                return self._progress(token, record)
            start = int(match[1])
            if start != have:        # the client resumes from what we said we have
                _drain(body, length)
                return self._progress(token, record)
        wanted = min(length, record["length"] - start, length if keep is None else keep)
        with open(self._part(token), "r+b" if start else "wb") as out:
            out.seek(start)
            out.truncate()
            left = wanted
            while left and (chunk := body.read(min(left, _CHUNK))):
                out.write(chunk)
                left -= len(chunk)
        _drain(body, length - (wanted - left))
        return self._progress(token, record)

    def _progress(self, token: str, record: dict) -> tuple[int, dict]:
        have = self.received(token)
        if have >= record["length"]:
            return 200, {}
        return 308, ({"Range": f"bytes=0-{have - 1}"} if have else {})

    def claim_check(self, token: str) -> dict:
        """The upload's record, if all of its bytes arrived; else a 400 naming the file."""
        record = self._record(token)
        if self.received(token) != record["length"]:
            raise ApiError(400, f"upload {token} ({record['name']}) is incomplete: "
                                f"{self.received(token)} of {record['length']} bytes arrived")
        return record

    def claim(self, token: str, destination_dir: Path) -> tuple[str, Path]:
        """Move a complete blob into `destination_dir` under its upload name."""
        record = self.claim_check(token)
        destination_dir.mkdir(parents=True, exist_ok=True)
        target = destination_dir / record["name"]
        self._part(token).replace(target)
        self.store.path("blobs", f"{token}.json").unlink()
        return record["name"], target
