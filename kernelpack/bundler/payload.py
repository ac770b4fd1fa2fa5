"""The bundle payload: every file a bundle carries, in one compressed literal of the script.

The format: base64 of gzip (level 9, mtime 0, so identical files give identical bytes) of one
JSON line `[[path, size], ...]` sorted by path, then the files' bytes in that order. In the script
it is the tuple `_KP_PAYLOAD = (...)`: base64 string literals of PAYLOAD_LINE characters, one a
line, the closing parenthesis alone on the last line. The writer is here; the reader is the
bootstrap's own `_kp_payload_files` (templates/bundle_bootstrap.py, standard library only), which
every kernel runs and which kernelpack imports to read a kernel's payload: one reader, not two.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import Iterable

from ..templates.bundle_bootstrap import _kp_payload_files

PAYLOAD_NAME = "_KP_PAYLOAD"
PAYLOAD_LINE = 96
# What reading a damaged payload raises (binascii.Error and JSON errors are ValueErrors,
# gzip.BadGzipFile an OSError, a truncated stream EOFError, a wrong index TypeError).
DAMAGED = (ValueError, TypeError, OSError, EOFError)
_TUPLE = re.compile(rf"^{PAYLOAD_NAME}\s*=\s*\((.*?)^\)", re.M | re.S)
_PIECE = re.compile(r"['\"]([A-Za-z0-9+/=]*)['\"]")


def encode_payload(files: dict[str, bytes]) -> str:
    """base64 of gzip(`[[path, size], ...]` as one JSON line, then the bytes in that order)."""
    names = sorted(files)
    index = json.dumps([[name, len(files[name])] for name in names], separators=(",", ":"))
    blob = index.encode("ascii") + b"\n" + b"".join(files[name] for name in names)
    return base64.b64encode(gzip.compress(blob, compresslevel=9, mtime=0)).decode("ascii")


def payload_tuple(files: dict[str, bytes]) -> str:
    """The Python source of the tuple assigned to `_KP_PAYLOAD`: its pieces one a line."""
    payload = encode_payload(files)
    lines = "".join(f"    {payload[i:i + PAYLOAD_LINE]!r}\n"
                    for i in range(0, len(payload), PAYLOAD_LINE))
    return f"(\n{lines})"


def payload_pieces(text: str) -> list[str] | None:
    """The base64 pieces of the `_KP_PAYLOAD` tuple in a script's `text`; None when it has no
    such tuple (a plain script, or a bundle whose tuple was rewritten)."""
    found = _TUPLE.search(text)
    return None if found is None else _PIECE.findall(found[1])


def decode_payload(pieces: Iterable[str]) -> dict[str, bytes]:
    """The files of a payload given as its base64 pieces: {path: bytes}. Raises one of DAMAGED
    when the pieces are not a payload."""
    return dict(_kp_payload_files(pieces))
