"""`kernelpack keygen`, `encrypt`, `decrypt` and `inspect`: keys and encrypted weights."""

from __future__ import annotations

import argparse
import json

from inference_core.kpenc import VERSION as KPENC_VERSION
from inference_core.kpenc import inspect as inspect_kpenc
from inference_core.kpenc import load_key

from ..progress import shows_progress
from .numbers import int_at_least


def _keygen(args: argparse.Namespace) -> int:
    from ..weights.encrypt import keygen

    path = keygen(args.output)
    print(f"wrote a new key to {path} (mode 0600); keep it out of public datasets and kernels")
    return 0


def _encrypt(args: argparse.Namespace) -> int:
    from ..weights.encrypt import encrypt_checkpoint

    header = encrypt_checkpoint(args.checkpoint, load_key(args.key), args.output,
                                name=args.name, fold=args.fold,
                                progress=shows_progress(args.quiet))
    manifest = header["manifest"]
    print(f"wrote {args.output}: model {manifest['name']!r} fold {manifest['fold']} "
          f"({manifest['arch']}, {header['plaintext_size']} bytes in {header['chunks']} chunks, "
          f"key id {header['key_id']})")
    return 0


def _decrypt(args: argparse.Namespace) -> int:
    from ..weights.encrypt import decrypt_file

    size = decrypt_file(args.input, load_key(args.key), args.output,
                        progress=shows_progress(args.quiet))
    print(f"wrote {args.output} ({size} bytes, mode 0600)")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    header = inspect_kpenc(args.input)
    print(json.dumps({"file": header.path, "format_version": KPENC_VERSION, "key_id": header.key_id,
                      "chunk_size": header.chunk_size, "chunks": header.chunks,
                      "plaintext_size": header.plaintext_size,
                      "manifest": header.manifest.fields()}, indent=2))
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    keygen_command = commands.add_parser("keygen", help="write a new 32-byte key (mode 0600)")
    keygen_command.add_argument("-o", "--output", required=True, help="key file to create")
    keygen_command.set_defaults(handler=_keygen)

    encrypt = commands.add_parser("encrypt", help="encrypt a checkpoint into a .kpenc file")
    encrypt.add_argument("checkpoint", help="a kernelpack checkpoint (.pt)")
    encrypt.add_argument("--key", required=True, help="key file from `kernelpack keygen`")
    encrypt.add_argument("-o", "--output", required=True, help="the .kpenc file to write")
    encrypt.add_argument("--name", default=None, help="model name (default: from the checkpoint)")
    encrypt.add_argument("--fold", type=int_at_least(0), default=None,
                         help="fold (default: from the checkpoint)")
    encrypt.add_argument("--quiet", action="store_true", help="no progress bar")
    encrypt.set_defaults(handler=_encrypt)

    decrypt = commands.add_parser("decrypt", help="decrypt a .kpenc file back to a checkpoint")
    decrypt.add_argument("input", help="the .kpenc file")
    decrypt.add_argument("--key", required=True, help="key file")
    decrypt.add_argument("-o", "--output", required=True, help="checkpoint file to write")
    decrypt.add_argument("--quiet", action="store_true", help="no progress bar")
    decrypt.set_defaults(handler=_decrypt)

    inspect_command = commands.add_parser("inspect", help="show a .kpenc header and manifest "
                                                          "(no key needed)")
    inspect_command.add_argument("input", help="the .kpenc file")
    inspect_command.set_defaults(handler=_inspect)

