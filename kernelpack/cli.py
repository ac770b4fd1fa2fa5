"""The `kernelpack` command: parses arguments, calls the library, prints, picks exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from inference_core.errors import KernelError
from inference_core.kpenc import VERSION as KPENC_VERSION
from inference_core.kpenc import decrypt_bytes, load_key
from inference_core.kpenc import inspect as inspect_kpenc

from . import __version__
from .build import build_kernel
from .cli_blend import add_commands as add_blend_commands
from .cli_bundle import add_commands as add_bundle_commands
from .cli_kaggle import add_commands as add_kaggle_commands
from .encrypt import encrypt_checkpoint, keygen
from .errors import KernelpackError
from .sandbox import NETWORK_MODES, run_local


def _build(args: argparse.Namespace) -> int:
    key = load_key(args.key) if args.key else None
    result = build_kernel(args.config, args.output, key=key)
    print(f"wrote {result.kernel} ({result.size_bytes / 1024:.1f} KiB, built in "
          f"{result.seconds:.2f} s) and {result.metadata}")
    return 0


def _run_local(args: argparse.Namespace) -> int:
    result = run_local(args.kernel, args.input, root=args.root, budget=args.budget,
                       network=args.network, test_dir=args.test_dir,
                       on_line=lambda line: print(f"  | {line}", flush=True))
    where = f"sandbox {result.root} (network cut: {result.network_cut}), log {result.log}"
    if result.timed_out:
        print(f"kernelpack: kernel killed at the {args.budget:g} s budget; {where}",
              file=sys.stderr)
        return 1
    if result.returncode != 0:
        print(f"kernelpack: kernel exited with code {result.returncode}; {where}",
              file=sys.stderr)
        return 1
    if result.submission is None:
        print(f"kernelpack: kernel finished but wrote no submission.csv; {where}",
              file=sys.stderr)
        return 1
    print(f"submission written: {result.submission} ({result.seconds:.1f} s; {where})")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    path = keygen(args.output)
    print(f"wrote a new key to {path} (mode 0600); keep it out of public datasets and kernels")
    return 0


def _encrypt(args: argparse.Namespace) -> int:
    header = encrypt_checkpoint(args.checkpoint, load_key(args.key), args.output,
                                name=args.name, fold=args.fold)
    manifest = header["manifest"]
    print(f"wrote {args.output}: model {manifest['name']!r} fold {manifest['fold']} "
          f"({manifest['arch']}, {header['plaintext_size']} bytes in {header['chunks']} chunks, "
          f"key id {header['key_id']})")
    return 0


def _decrypt(args: argparse.Namespace) -> int:
    plaintext = decrypt_bytes(args.input, load_key(args.key))
    output = Path(args.output)
    partial = output.with_name(output.name + ".partial")
    partial.write_bytes(plaintext)
    partial.replace(output)
    print(f"wrote {output} ({len(plaintext)} bytes)")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    header = inspect_kpenc(args.input)
    print(json.dumps({"file": header.path, "format_version": KPENC_VERSION, "key_id": header.key_id,
                      "chunk_size": header.chunk_size, "chunks": header.chunks,
                      "plaintext_size": header.plaintext_size, "manifest": header.manifest},
                     indent=2))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kernelpack",
        description="Bundle a PyTorch ensemble into one offline Kaggle kernel and rehearse it.",
    )
    parser.add_argument("--version", action="version", version=f"kernelpack {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="bundle the runtime and a config into kernel.py")
    build.add_argument("config", help="ensemble YAML")
    build.add_argument("-o", "--output", required=True, help="output folder")
    build.add_argument("--key", default=None,
                       help="key file: embed it so the kernel decrypts .kpenc models "
                            "(refused unless kernel.is_private is true)")
    build.set_defaults(handler=_build)

    keygen_command = commands.add_parser("keygen", help="write a new 32-byte key (mode 0600)")
    keygen_command.add_argument("-o", "--output", required=True, help="key file to create")
    keygen_command.set_defaults(handler=_keygen)

    encrypt = commands.add_parser("encrypt", help="encrypt a checkpoint into a .kpenc file")
    encrypt.add_argument("checkpoint", help="a kernelpack checkpoint (.pt)")
    encrypt.add_argument("--key", required=True, help="key file from `kernelpack keygen`")
    encrypt.add_argument("-o", "--output", required=True, help="the .kpenc file to write")
    encrypt.add_argument("--name", default=None, help="model name (default: from the checkpoint)")
    encrypt.add_argument("--fold", type=int, default=None,
                         help="fold (default: from the checkpoint)")
    encrypt.set_defaults(handler=_encrypt)

    decrypt = commands.add_parser("decrypt", help="decrypt a .kpenc file back to a checkpoint")
    decrypt.add_argument("input", help="the .kpenc file")
    decrypt.add_argument("--key", required=True, help="key file")
    decrypt.add_argument("-o", "--output", required=True, help="checkpoint file to write")
    decrypt.set_defaults(handler=_decrypt)

    inspect_command = commands.add_parser("inspect", help="show a .kpenc header and manifest "
                                                          "(no key needed)")
    inspect_command.add_argument("input", help="the .kpenc file")
    inspect_command.set_defaults(handler=_inspect)

    run = commands.add_parser("run-local", help="run a built kernel offline, as Kaggle would")
    run.add_argument("kernel", help="folder written by `kernelpack build` (or its kernel.py)")
    run.add_argument("--input", required=True, help="folder laid out like /kaggle/input")
    run.add_argument("--budget", type=float, default=None,
                     help="wall-clock budget in seconds (kill the kernel after it)")
    run.add_argument("--root", default=None,
                     help="sandbox folder (default: KERNEL_DIR/sandbox, recreated each run)")
    run.add_argument("--test-dir", default=None,
                     help="swap in this folder of test images (and a matching sample "
                          "submission), as Kaggle swaps in the hidden test set at rerun")
    run.add_argument("--network", choices=NETWORK_MODES, default="auto",
                     help="how to cut the network: a namespace (unshare), an in-process socket "
                          "guard, or auto (unshare where it works)")
    run.set_defaults(handler=_run_local)
    add_blend_commands(commands)
    add_bundle_commands(commands)
    add_kaggle_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (KernelpackError, KernelError) as exc:
        print(f"kernelpack: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
