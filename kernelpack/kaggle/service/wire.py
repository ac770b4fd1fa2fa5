"""What every part of the local service shares about the wire: the error shape and timestamps."""

from __future__ import annotations

import time


class ApiError(Exception):
    """Answered as `{"code": N, "message": ...}` with HTTP status N, as the real service does."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def timestamp(epoch: float) -> str:
    """ISO time with milliseconds and a Z suffix, the form kagglesdk parses."""
    millis = int(epoch * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{millis:03d}Z"


# Most file systems take 255 bytes per name; room is left for the service's own suffixes.
MAX_NAME_BYTES = 200


def check_name(name: object, what: str) -> str:
    """A single path segment sent by a client; anything that could escape a folder, or that the
    file system could not hold, is refused."""
    if not isinstance(name, str):
        raise ApiError(400, f"invalid {what} {name!r}: must be a string")
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ApiError(400, f"invalid {what} {name!r}: must be a plain file or slug name")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise ApiError(400, f"invalid {what} {name[:40]!r}...: longer than {MAX_NAME_BYTES} "
                            "bytes")
    return name
