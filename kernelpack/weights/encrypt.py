"""Host side of the .kpenc container: keys, streaming encryption, and decryption to a private file
(`kernelpack decrypt`).

AES-GCM comes from `cryptography` when it is installed (the `kernelpack[cryptography]` extra),
else from `pycryptodome` (a dependency of kernelpack, and on the Kaggle image): the same key and
nonce give the same bytes from either, and the kernel reads them with either.

The format itself (layout, nonces, header) is defined once, in `inference_core.kpenc`; this module
only writes it. Plaintext is read twice, chunk by chunk (once to hash it for the manifest, once to
encrypt it), so memory stays at one chunk whatever the size of the checkpoint.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from inference_core.files import atomic_write
from inference_core.kpenc import (
    DEFAULT_CHUNK_SIZE,
    KEY_SIZE,
    KpencError,
    KpencHeader,
    KpencManifest,
    decrypt_chunks,
)
from inference_core.model_config import ModelConfig

from ..errors import KernelpackError, MissingExtraError
from ..outputs import check_output_file
from ..progress import ProgressReader, byte_bar, sha256_with_progress
from .checkpoint_fields import checkpoint_fields

# The AES-GCM libraries, in the order tried.
BACKENDS = ("cryptography", "pycryptodome")


class _Sealer:
    """Seals AES-GCM chunks (ciphertext + 16-byte tag) with one backend."""

    def __init__(self, key: bytes, backend: str | None = None) -> None:
        self.backend = backend or sealing_backend()
        if self.backend == "cryptography":
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self.seal = AESGCM(key).encrypt
        elif self.backend == "pycryptodome":
            from Crypto.Cipher import AES

            def seal(nonce: bytes, plain: bytes, aad: bytes) -> bytes:
                cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
                cipher.update(aad)
                sealed, tag = cipher.encrypt_and_digest(plain)
                return sealed + tag

            self.seal = seal
        else:
            raise KernelpackError(f"unknown AES-GCM backend {self.backend!r}; use one of "
                                  f"{', '.join(BACKENDS)}")


def sealing_backend() -> str:
    """The first AES-GCM library of BACKENDS that imports."""
    for backend, module in zip(BACKENDS, ("cryptography.hazmat.primitives.ciphers.aead",
                                          "Crypto.Cipher.AES"), strict=True):
        try:
            __import__(module)
            return backend
        except ImportError:
            continue
    raise MissingExtraError("encryption needs pycryptodome or cryptography, and neither is "
                            "installed; pip install pycryptodome (a kernelpack dependency), or "
                            "pip install 'kernelpack[cryptography]'")


def keygen(path: str | os.PathLike) -> Path:
    """Write 32 random bytes as hex to a new file readable only by its owner (mode 0600)."""
    path = Path(path)
    if not path.is_dir():  # a folder "already exists", said below
        check_output_file(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KernelpackError(f"{path}: already exists; a key is never overwritten (the models "
                              "it encrypted would be lost), pick another path") from None
    except OSError as exc:
        raise KernelpackError(f"-o {path}: cannot create the key file ({exc.strerror}); pick "
                              "a path in a folder you can write") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(os.urandom(KEY_SIZE).hex() + "\n")
    return path


def manifest_for(checkpoint_path: Path, name: str | None, fold: int | None,
                 progress: bool = False) -> KpencManifest:
    """The public manifest, from the checkpoint itself (its plain fields, read without torch; a
    checkpoint that needs pickled code is refused here, as torch.load(weights_only=True) does).
    Hashing reads the whole file: `progress` shows it as a byte bar, once the config passed."""
    checkpoint = checkpoint_fields(checkpoint_path)  # only the config is read
    config = ModelConfig.from_checkpoint(checkpoint, str(checkpoint_path))
    with byte_bar(checkpoint_path.stat().st_size, f"hash {checkpoint_path.name}",
                  progress) as bar:
        digest = sha256_with_progress(checkpoint_path, bar)
    return KpencManifest(name=name or config.name or checkpoint_path.stem,
                         fold=fold if fold is not None else config.fold, arch=config.arch,
                         num_classes=config.num_classes, input_size=config.input_size,
                         resize=config.resize, mean=config.mean, std=config.std, sha256=digest)


def encrypt_checkpoint(checkpoint: str | os.PathLike, key: bytes, output: str | os.PathLike, *,
                       name: str | None = None, fold: int | None = None,
                       chunk_size: int = DEFAULT_CHUNK_SIZE, progress: bool = False) -> dict:
    """Encrypt a kernelpack checkpoint into `output`; returns the header written. `progress`:
    show the hashing pass, then the encryption pass, as byte bars on stderr."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise KernelpackError(f"{checkpoint}: checkpoint not found (or not a file); pass a "
                              "kernelpack checkpoint (.pt)")
    check_output_file(output, inputs=[checkpoint])
    manifest = manifest_for(checkpoint, name, fold, progress)
    with byte_bar(checkpoint.stat().st_size, f"encrypt {checkpoint.name}", progress) as bar:
        return encrypt_file(checkpoint, key, output, manifest, chunk_size, bar)


def encrypt_file(source: str | os.PathLike, key: bytes, output: str | os.PathLike,
                 manifest: KpencManifest, chunk_size: int = DEFAULT_CHUNK_SIZE, bar: Any = None,
                 *, backend: str | None = None) -> dict:
    """Seal any file into a .kpenc container with `manifest`; returns the header written (its
    JSON object). The container is written mode 0600 and appears only once complete. `bar`: a
    byte bar (`progress.byte_bar`) that the plaintext read advances. `backend`: one of BACKENDS
    (default: the first installed)."""
    source, output = Path(source), Path(output)
    size = source.stat().st_size
    header = KpencHeader.create(key, size, manifest, chunk_size, path=str(output))
    sealer = _Sealer(key, backend)
    with open(source, "rb") as stream, atomic_write(output, private=True) as sink:
        plain_file = stream if bar is None else ProgressReader(stream, bar)
        sink.write(header.preamble)
        for index in range(header.chunks):
            plain = plain_file.read(chunk_size)
            sink.write(sealer.seal(header.nonce(index), plain, header.aad))
        if len(plain) != header.chunk_length(header.chunks - 1) or plain_file.read(1):
            raise KpencError(f"{source}: changed while it was being encrypted; try again")
    return header.fields()


def decrypt_file(source: str | os.PathLike, key: bytes, output: str | os.PathLike, *,
                 progress: bool = False) -> int:
    """Decrypt a .kpenc file into `output` (mode 0600), chunk by chunk, each authenticated
    before it is written; the file appears under its name only once every chunk is in, and
    nothing is left on any failure. Returns the plaintext size. `progress`: show a byte bar on
    stderr."""
    output = check_output_file(output, inputs=[source])
    size, bar = 0, None
    with atomic_write(output, private=True) as sink, ExitStack() as closing:
        for header, plain in decrypt_chunks(source, key):
            if bar is None:  # after the header and the key are checked: a refused file, no bar
                bar = closing.enter_context(byte_bar(header.plaintext_size,
                                                     f"decrypt {Path(source).name}", progress))
            sink.write(plain)
            size += len(plain)
            bar.update(len(plain))
    return size
