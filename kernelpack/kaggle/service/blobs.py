"""Blob uploads with the resumable protocol the client speaks (GCS-style, see kaggle-api.md §3.3).

`StartBlobUpload` hands out a token and an `http://` URL; the client PUTs the bytes there. A PUT
with `Content-Range: bytes */N` and no body asks how much arrived: 200 when all of it, else 308
with `Range: bytes=0-LAST` (no Range when nothing arrived). A PUT with `Content-Range:
bytes S-E/N` appends from S. Partial bytes live in `ROOT/blobs/TOKEN.part` and survive restarts.
A PUT that would carry more than the upload declared is refused whole. An upload left unclaimed
(never finished, or refused after it arrived) is deleted `upload_seconds` after its last byte.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import BinaryIO

from inference_core.files import sha256_file

from .store import Store
from .wire import ApiError, check_name

_RANGE = re.compile(r"^bytes (?:\*|(\d+)-(\d+))/(\d+)$")
_CHUNK = 1 << 20
# Kaggle's limit for a dataset's total size is far below this; a declared size above it is a lie.
MAX_UPLOAD_BYTES = 1 << 40
# Kaggle's upload links last about a week; a rehearsal needs far less.
UNCLAIMED_UPLOAD_SECONDS = 24 * 3600


def _drain(body: BinaryIO, length: int) -> None:
    """Read what is left of a request body, so the connection stays usable."""
    while length > 0 and (chunk := body.read(min(length, _CHUNK))):
        length -= len(chunk)


class BlobStore:
    def __init__(self, store: Store, upload_seconds: float = UNCLAIMED_UPLOAD_SECONDS) -> None:
        self.store = store
        self.upload_seconds = upload_seconds

    def clean(self) -> list[str]:
        """Delete the uploads nobody claimed within `upload_seconds` of their last byte (and
        stray halves of a crash); returns their tokens."""
        folder = self.store.path("blobs")
        if not folder.is_dir():
            return []
        cutoff = time.time() - self.upload_seconds
        gone = []
        with self.store.lock:
            for token in sorted({p.name.split(".")[0] for p in folder.iterdir()}):
                files = [folder / f"{token}.json", folder / f"{token}.part"]
                times = [p.stat().st_mtime for p in files if p.exists()]
                if len(times) < 2 or max(times) < cutoff:
                    for path in files:
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
                    gone.append(token)
        return gone

    def discard(self, files: object) -> None:
        """Delete the uploads a refused request named (`[{"token": ...}, ...]`): the client
        forgets them once it has an answer, so nobody would ever claim them."""
        tokens = [entry.get("token") for entry in files if isinstance(entry, dict)] \
            if isinstance(files, list) else []
        with self.store.lock:
            for token in tokens:
                if isinstance(token, str) and re.fullmatch(r"[0-9a-f]{1,64}", token):
                    for suffix in (".json", ".part"):
                        with contextlib.suppress(FileNotFoundError):
                            self.store.path("blobs", token + suffix).unlink()

    def max_put(self, token: str) -> int:
        """The most bytes one PUT to this upload may carry."""
        return self._record(token)["length"]

    def _part(self, token: str) -> Path:
        return self.store.path("blobs", f"{token}.part")

    def start(self, request: dict, base_url: str) -> dict:
        name = check_name(request.get("name", ""), "file name")
        length = request.get("contentLength", 0)
        if isinstance(length, str) and length.isascii() and length.isdigit():
            length = int(length)         # protobuf's JSON form sends 64-bit numbers as strings
        if type(length) is not int or not 0 <= length <= MAX_UPLOAD_BYTES:
            raise ApiError(400, f"bad contentLength {length!r} for {name}: a whole number of "
                                f"bytes up to {MAX_UPLOAD_BYTES}")
        token = secrets.token_hex(12)
        with self.store.lock:
            self.store.write({"name": name, "length": length}, "blobs", f"{token}.json")
            self._part(token).touch()
        return {"token": token, "createUrl": f"{base_url}/upload/{token}"}

    def _record(self, token: str) -> dict:
        if not re.fullmatch(r"[0-9a-f]{1,64}", token):
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
            if int(match[2]) - start + 1 != length:
                raise ApiError(400, f"Content-Range {content_range!r} does not match the "
                                    f"{length}-byte body")
        if start + length > record["length"]:
            raise ApiError(400, f"upload {token} ({record['name']}): {length} bytes from byte "
                                f"{start} go past the declared {record['length']}; nothing was "
                                "kept from this request")
        if content_range and start != have:     # a resume starts where we said we are
            _drain(body, length)
            return self._progress(token, record)
        wanted = length if keep is None else min(length, keep)
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

    def claim_files(self, files: object, destination_dir: Path, what: str) -> list[dict]:
        """Move the uploads a new version names (`[{"token": ...}, ...]`) into `destination_dir`
        (a new version's folder, emptied first); returns each file's name, size and sha256.
        Every upload is checked before any is moved, so a bad request leaves nothing
        half-landed."""
        if not isinstance(files, list) or not all(isinstance(entry, dict) for entry in files):
            raise ApiError(400, f"{what}: files must be a list of {{\"token\": ...}} objects")
        tokens = [entry.get("token", "") for entry in files]
        if not tokens:
            raise ApiError(400, f"{what}: a version needs at least one file")
        names = [self.claim_check(token)["name"] for token in tokens]
        if len(set(names)) != len(names):
            raise ApiError(400, f"{what}: two files share a name in {names}")
        # The folder of a version not yet recorded: whatever is in it was claimed by a create
        # that never got its record written (the service killed, a full disk), and must not
        # show up in this version.
        if destination_dir.is_dir():
            shutil.rmtree(destination_dir)
        entries = []
        for token in tokens:
            name, path = self.claim(token, destination_dir)
            entries.append({"name": name, "size": path.stat().st_size, "sha256": sha256_file(path)})
        return entries

    def claim(self, token: str, destination_dir: Path) -> tuple[str, Path]:
        """Move a complete blob into `destination_dir` under its upload name."""
        record = self.claim_check(token)
        destination_dir.mkdir(parents=True, exist_ok=True)
        target = destination_dir / record["name"]
        self._part(token).replace(target)
        self.store.path("blobs", f"{token}.json").unlink()
        return record["name"], target
