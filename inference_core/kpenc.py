"""The `.kpenc` container: model weights encrypted with AES-256-GCM in chunks.

Layout (all integers little-endian):

    offset  size  field
    0       8     magic  b"\\x89KPENC\\r\\n"  (the 0x89 and CR LF catch text-mode mangling)
    8       2     format version, currently 1
    10      4     H: length of the header
    14      H     header: UTF-8 JSON object, sorted keys, with
                    key_id          16 hex digits: SHA-256("kernelpack-key-id" + key)[:8]
                    nonce_prefix    14 hex digits: 7 random bytes, fresh for every file
                    chunk_size      plaintext bytes per chunk (the last one may be shorter)
                    chunks          number of chunks (at least 1)
                    plaintext_size  bytes of the decrypted checkpoint
                    manifest        public facts (`KpencManifest`): name, fold, arch,
                                    num_classes, input_size, resize, mean, std, sha256 (of the
                                    plaintext checkpoint)
    14+H    ...   chunks: ciphertext (chunk_size bytes, the last one shorter) + 16-byte GCM tag

Chunk i is sealed with nonce = nonce_prefix (7 bytes) + i (4 bytes, big-endian) + last flag
(1 byte: 1 for the final chunk, else 0), and with the SHA-256 of bytes 0..14+H (the whole
preamble) as associated data. So a chunk cannot be moved, a file cannot be cut short at a chunk
boundary, and the manifest cannot be edited, without failing authentication. The key id lets a
wrong key fail at once, by name, before any decryption.

The manifest is public (`kernelpack inspect` shows it without a key); the key never appears in a
header, a log line or an error message. Decryption goes to memory only: to an anonymous in-memory
file (`memfd`) that `torch.load(mmap=True)` maps without another copy, or to a bytes buffer where
memfd does not exist. Encryption lives on the host (`kernelpack.weights.encrypt`); this module
decrypts, with `cryptography` when it is importable, else with `pycryptodome` (which the Kaggle
image ships).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .errors import DamagedFileError, KernelError

MAGIC = b"\x89KPENC\r\n"
VERSION = 1
KEY_SIZE = 32
TAG_SIZE = 16
NONCE_PREFIX_SIZE = 7
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
MAX_HEADER_SIZE = 1024 * 1024
# Decryption holds one chunk in memory: a header claiming more is damaged or hostile, refused
# before anything is allocated.
MAX_CHUNK_SIZE = 256 * 1024 * 1024
_HEX = frozenset("0123456789abcdef")
_PREAMBLE = struct.Struct("<8sHI")


class KpencError(KernelError):
    """A .kpenc file cannot be read or decrypted; the message names the file and the fix."""


class KpencDamagedError(KpencError, DamagedFileError):
    """A .kpenc file whose size or content does not authenticate: cut short, padded, tampered."""


def key_id(key: bytes) -> str:
    """The public fingerprint of a key, stored in every header it encrypts."""
    return hashlib.sha256(b"kernelpack-key-id" + key).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class KpencManifest:
    """The public facts of a .kpenc file, shown without a key: the model's identity (discovery
    matches on name, fold and sha256) and what its checkpoint says about it. Every field is
    optional; each is checked when the manifest is made, by the writer or from a header read."""

    name: str | None = None
    fold: int | None = None
    arch: str | None = None
    num_classes: int | None = None
    input_size: int | None = None
    resize: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    sha256: str | None = None  # of the plaintext checkpoint

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise KpencError(problem)

    @classmethod
    def from_fields(cls, fields: Any) -> KpencManifest:
        """The manifest a header stores (its JSON object); KpencError says what is wrong."""
        if not isinstance(fields, dict):
            raise KpencError("manifest is not a JSON object")
        known = [spec.name for spec in dataclasses.fields(cls)]
        for key in fields:
            if key not in known:
                raise KpencError(f"manifest field {str(key)[:40]!r} is unknown")
        # JSON has lists; the manifest, frozen, holds tuples.
        return cls(**{key: tuple(value) if isinstance(value, list) else value
                      for key, value in fields.items()})

    def fields(self) -> dict:
        """The JSON object a header stores: every field (unset ones as null), in sorted order,
        the order the header has and `kernelpack inspect` shows."""
        names = sorted(spec.name for spec in dataclasses.fields(self))
        values = {name: getattr(self, name) for name in names}
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in values.items()}

    def _problem(self) -> str | None:
        """What is wrong with the fields, or None."""
        def integer(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def numbers(value) -> bool:
            return isinstance(value, tuple) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)

        checks = (("name", isinstance(self.name, str), "a string"),
                  ("fold", integer(self.fold), "an integer"),
                  ("arch", isinstance(self.arch, str), "a string"),
                  ("num_classes", integer(self.num_classes), "an integer"),
                  ("input_size", integer(self.input_size), "an integer"),
                  ("resize", isinstance(self.resize, str), "a string"),
                  ("mean", numbers(self.mean), "a list of numbers"),
                  ("std", numbers(self.std), "a list of numbers"),
                  ("sha256", isinstance(self.sha256, str) and len(self.sha256) == 64
                   and _HEX.issuperset(self.sha256), "64 hex digits"))
        for key, right, what in checks:
            value = getattr(self, key)
            if value is not None and not right:
                return f"manifest {key} {str(value)[:40]!r} is not {what}"
        return None


@dataclass(frozen=True)
class KpencHeader:
    """The header of a .kpenc file: the writer creates and encodes it, the reader parses it; both
    sides check it here, so a header that would not read back is never written."""

    key_id: str
    nonce_prefix: bytes
    chunk_size: int
    chunks: int
    plaintext_size: int
    manifest: KpencManifest
    path: str = "<.kpenc header>"  # the file, for messages
    # Bytes 0..14+H exactly as written or read: what every chunk authenticates.
    preamble: bytes = field(default=b"", repr=False)

    @classmethod
    def create(cls, key: bytes, plaintext_size: int, manifest: KpencManifest,
               chunk_size: int = DEFAULT_CHUNK_SIZE, path: str = "<.kpenc header>"
               ) -> KpencHeader:
        """A new header with a fresh random nonce prefix, for `plaintext_size` bytes."""
        check_key(key)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise KpencError(f"{path}: chunk size must be a positive integer, got {chunk_size!r}")
        if chunk_size > MAX_CHUNK_SIZE:
            raise KpencError(f"{path}: chunk size {chunk_size} is above the {MAX_CHUNK_SIZE} "
                             "bytes a reader allows; pick a smaller one")
        return cls(key_id=key_id(key), nonce_prefix=os.urandom(NONCE_PREFIX_SIZE),
                   chunk_size=chunk_size, chunks=max(1, -(-plaintext_size // chunk_size)),
                   plaintext_size=plaintext_size, manifest=manifest, path=path)

    @classmethod
    def read(cls, handle: BinaryIO, label: str) -> KpencHeader:
        """Parse and check the preamble; raises KpencError for anything that is not a .kpenc
        v1."""
        fixed = handle.read(_PREAMBLE.size)
        if len(fixed) < _PREAMBLE.size or not fixed.startswith(MAGIC):
            raise KpencError(f"{label}: not a .kpenc file (bad magic); encrypt checkpoints with "
                             "`kernelpack encrypt`")
        _, version, length = _PREAMBLE.unpack(fixed)
        if version != VERSION:
            raise KpencError(f"{label}: .kpenc format version {version} is not supported (this "
                             f"runtime reads version {VERSION}); rebuild the kernel with a "
                             "matching kernelpack")
        if length > MAX_HEADER_SIZE:
            raise KpencError(f"{label}: header length {length} is implausible; the file is "
                             "damaged")
        body = handle.read(length)
        if len(body) < length:
            raise KpencError(f"{label}: header is cut short ({len(body)} of {length} bytes); the "
                             "file is truncated, re-download it")
        try:
            fields = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
            manifest = fields["manifest"]
            header = dict(key_id=fields["key_id"],
                          nonce_prefix=bytes.fromhex(fields["nonce_prefix"]),
                          chunk_size=fields["chunk_size"], chunks=fields["chunks"],
                          plaintext_size=fields["plaintext_size"])
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as exc:
            problem = str(exc)[:200]  # a hostile header can make a long message
            raise KpencError(f"{label}: header is damaged ({type(exc).__name__}: {problem}); "
                             "re-download or re-encrypt the file") from None
        try:
            manifest = KpencManifest.from_fields(manifest)
        except KpencError as exc:
            raise KpencError(f"{label}: header fields are inconsistent ({exc}); the file is "
                             "damaged, re-download or re-encrypt it") from None
        return cls(**header, manifest=manifest, path=label, preamble=fixed + body)

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise KpencError(f"{self.path}: header fields are inconsistent ({problem}); the file "
                             "is damaged, re-download or re-encrypt it")
        if not self.preamble:
            object.__setattr__(self, "preamble", self.encode())

    def _problem(self) -> str | None:
        """What is wrong with the fields, or None."""
        def count(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 0

        if not isinstance(self.key_id, str) or len(self.key_id) != 16 \
                or not _HEX.issuperset(self.key_id):
            return f"key_id {str(self.key_id)[:40]!r} is not 16 hex digits"
        if len(self.nonce_prefix) != NONCE_PREFIX_SIZE:
            return f"nonce_prefix is {len(self.nonce_prefix)} bytes, not {NONCE_PREFIX_SIZE}"
        if not all(count(v) for v in (self.chunk_size, self.chunks, self.plaintext_size)):
            return "chunk_size, chunks and plaintext_size must be non-negative integers"
        if self.chunk_size < 1 or self.chunks < 1:
            return "chunk_size and chunks must be at least 1"
        if self.chunk_size > MAX_CHUNK_SIZE:
            return f"chunk_size {self.chunk_size} is above the {MAX_CHUNK_SIZE} bytes allowed"
        if not 0 <= self.chunk_length(self.chunks - 1) <= self.chunk_size:
            return (f"{self.chunks} chunks of {self.chunk_size} bytes cannot hold "
                    f"{self.plaintext_size} bytes")
        return None

    def fields(self) -> dict:
        """The header as the JSON object stored in the file."""
        return {"key_id": self.key_id, "nonce_prefix": self.nonce_prefix.hex(),
                "chunk_size": self.chunk_size, "chunks": self.chunks,
                "plaintext_size": self.plaintext_size, "manifest": self.manifest.fields()}

    def encode(self) -> bytes:
        """Magic, version, header length and header (sorted keys, no spaces)."""
        body = json.dumps(self.fields(), sort_keys=True, separators=(",", ":")).encode("utf-8")
        if len(body) > MAX_HEADER_SIZE:
            raise KpencError(f"{self.path}: the manifest makes the header {len(body)} bytes "
                             f"(at most {MAX_HEADER_SIZE}); keep the manifest small")
        return _PREAMBLE.pack(MAGIC, VERSION, len(body)) + body

    @property
    def aad(self) -> bytes:
        """The associated data of every chunk: SHA-256 of the preamble."""
        return hashlib.sha256(self.preamble).digest()

    @property
    def data_offset(self) -> int:
        return len(self.preamble)

    def nonce(self, index: int) -> bytes:
        """Chunk `index`'s nonce: prefix, index (big-endian), and whether it is the last."""
        last = b"\x01" if index == self.chunks - 1 else b"\x00"
        return self.nonce_prefix + struct.pack(">I", index) + last

    def chunk_length(self, index: int) -> int:
        """Plaintext bytes in chunk `index`."""
        if index < self.chunks - 1:
            return self.chunk_size
        return self.plaintext_size - self.chunk_size * (self.chunks - 1)

    @property
    def file_size(self) -> int:
        return self.data_offset + self.plaintext_size + self.chunks * TAG_SIZE


def _no_constant(name: str):
    """json.loads would read NaN and Infinity; a header holds finite numbers only."""
    raise ValueError(f"{name} is not a finite number")


def _open(path: str | os.PathLike) -> BinaryIO:
    """The .kpenc file opened for reading; a missing or unreadable file is one KpencError."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise KpencError(f"{path}: file not found; pass the path of a .kpenc file") from None
    except IsADirectoryError:
        raise KpencError(f"{path}: is a folder; pass the path of a .kpenc file") from None
    except OSError as exc:
        raise KpencError(f"{path}: cannot be read ({exc.strerror}); check the path and its "
                         "permissions") from None


def inspect(path: str | os.PathLike) -> KpencHeader:
    """The header of a .kpenc file (no key needed)."""
    with _open(path) as handle:
        return KpencHeader.read(handle, str(path))


class _Opener:
    """Opens AES-GCM chunks with whichever backend is importable."""

    def __init__(self, key: bytes, backend: str | None = None) -> None:
        self.backend = backend or _available_backend()
        if self.backend == "cryptography":
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aead = AESGCM(key)
        elif self.backend == "pycryptodome":
            from Crypto.Cipher import AES

            self._key, self._aes = key, AES
        else:
            raise ValueError(f"unknown decrypt backend {self.backend!r}")

    def open(self, nonce: bytes, sealed: memoryview, aad: bytes) -> bytes:
        """Plaintext of one chunk; raises ValueError if it does not authenticate."""
        if self.backend == "cryptography":
            from cryptography.exceptions import InvalidTag

            try:
                return self._aead.decrypt(nonce, sealed, aad)
            except InvalidTag:
                raise ValueError("authentication failed") from None
        cipher = self._aes.new(self._key, self._aes.MODE_GCM, nonce=nonce)
        cipher.update(aad)
        return cipher.decrypt_and_verify(sealed[:-TAG_SIZE], sealed[-TAG_SIZE:])


def _available_backend() -> str:
    for module, name in (("cryptography.hazmat.primitives.ciphers.aead", "cryptography"),
                         ("Crypto.Cipher.AES", "pycryptodome")):
        try:
            __import__(module)
            return name
        except ImportError:
            continue
    raise KpencError("no AES-GCM backend: install cryptography or pycryptodome (the Kaggle "
                     "image ships pycryptodome)")


def check_key(key: bytes) -> None:
    if not isinstance(key, (bytes, bytearray)):
        raise KpencError(f"the decryption key must be bytes, got {type(key).__name__}; use a "
                         "key file written by `kernelpack keygen`")
    if len(key) != KEY_SIZE:
        raise KpencError(f"the decryption key must be {KEY_SIZE} bytes, got {len(key)}; use a "
                         "key file written by `kernelpack keygen`")


def decrypt_chunks(path: str | os.PathLike, key: bytes, backend: str | None = None):
    """Yield (header, plaintext chunk) pairs, each chunk authenticated before it is yielded."""
    check_key(key)
    label = str(path)
    with _open(path) as handle:
        header = KpencHeader.read(handle, label)
        if header.key_id != key_id(key):
            raise KpencError(f"{label}: key id {header.key_id} does not match the key in use "
                             f"({key_id(key)}); pass the key this model was encrypted with")
        actual_size = os.fstat(handle.fileno()).st_size
        if actual_size != header.file_size:
            raise KpencDamagedError(f"{label}: file is {actual_size} bytes but its header "
                                    f"promises {header.file_size}; it is truncated or padded, "
                                    "re-download it")
        opener = _Opener(key, backend)
        # The first chunk is the largest; the size check above bounds it by the file's size.
        buffer = bytearray(header.chunk_length(0) + TAG_SIZE)
        for index in range(header.chunks):
            size = header.chunk_length(index) + TAG_SIZE
            view = memoryview(buffer)[:size]
            handle.readinto(view)
            try:
                plain = opener.open(header.nonce(index), view, header.aad)
            except ValueError:
                raise KpencDamagedError(f"{label}: chunk {index} of {header.chunks} fails "
                                        "authentication (tampered, reordered or corrupted); "
                                        "re-download or re-encrypt the file") from None
            yield header, plain


def decrypt_to_memory(path: str | os.PathLike, key: bytes, backend: str | None = None
                      ) -> BinaryIO:
    """The plaintext as a readable in-memory file, never on disk.

    On Linux it is a memfd, so `torch.load(f"/proc/self/fd/{f.fileno()}", mmap=True)` maps the
    tensors without a second copy; elsewhere it is a BytesIO.
    """
    if hasattr(os, "memfd_create"):
        handle = os.fdopen(os.memfd_create("kernelpack-weights", os.MFD_CLOEXEC), "w+b")
    else:
        handle = io.BytesIO()
    try:
        for _, plain in decrypt_chunks(path, key, backend):
            handle.write(plain)
    except BaseException:
        handle.close()
        raise
    handle.seek(0)
    return handle


def mappable_path(handle: BinaryIO) -> str | None:
    """A path through which `torch.load(..., mmap=True)` can map an in-memory file, if any."""
    if isinstance(handle, io.BytesIO):
        return None
    path = f"/proc/self/fd/{handle.fileno()}"
    return path if os.path.exists(path) else None


def decrypt_bytes(path: str | os.PathLike, key: bytes, backend: str | None = None) -> bytes:
    """The whole plaintext as bytes (small files, tests, `kernelpack decrypt`)."""
    return b"".join(plain for _, plain in decrypt_chunks(path, key, backend))


def is_kpenc(path: str | os.PathLike) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def load_key(path: str | os.PathLike) -> bytes:
    """A key file as written by `kernelpack keygen`: 64 hex digits (and a newline), readable by
    its owner only (as ssh refuses a private key that others can read)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            text = handle.read(4 * KEY_SIZE).decode("ascii").strip()  # never a huge read
        key = bytes.fromhex(text)
    except FileNotFoundError:
        raise KpencError(f"{path}: key file not found; create one with `kernelpack keygen -o "
                         f"{path}`") from None
    except IsADirectoryError:
        raise KpencError(f"{path}: is a folder, not a key file; pass the file written by "
                         "`kernelpack keygen`") from None
    except OSError as exc:
        raise KpencError(f"{path}: key file cannot be read ({exc.strerror}); check the path "
                         "and its permissions") from None
    except (UnicodeDecodeError, ValueError):
        raise KpencError(f"{path}: not a key file (expected {2 * KEY_SIZE} hex digits); create "
                         "one with `kernelpack keygen`") from None
    if len(key) != KEY_SIZE:
        raise KpencError(f"{path}: key is {len(key)} bytes, expected {KEY_SIZE}; create one "
                         "with `kernelpack keygen`")
    if os.name == "posix" and mode & 0o077:
        raise KpencError(f"{path}: key file is open to group or others (mode {mode & 0o777:o}); "
                         f"run `chmod 600 {path}` so that only you can read it")
    return key
