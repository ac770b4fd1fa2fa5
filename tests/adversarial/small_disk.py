"""A real full disk for the tests: a small tmpfs, mounted in a private mount namespace (as root, or
as the root of a new user namespace where the system allows one), around one command. Nothing
outside that command sees the mount, and it is gone when the command ends."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

# Mounts a tmpfs of size $1 on $2, then runs the rest of the arguments.
_MOUNT_THEN_RUN = 'mount -t tmpfs -o "size=$1" tmpfs "$2" && shift 2 && exec "$@"'

# Runs `kernelpack ARGS` in-process, then lists the files left under the small disk, as JSON.
_CLI_THEN_LIST = """\
import contextlib, io, json, os, sys
from pathlib import Path
from kernelpack.cli.main import main
args, disk = json.loads(sys.argv[1]), Path(sys.argv[2])
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
files = {p.relative_to(disk).as_posix(): p.stat().st_size for p in sorted(disk.rglob("*"))
         if p.is_file() and not p.is_symlink()}
stats = os.statvfs(disk)
print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue(), "files": files,
                  "free": stats.f_bavail * stats.f_frsize}))
"""


@cache
def _namespace_prefix() -> tuple[str, ...] | None:
    """How to get a private mount namespace that may mount a tmpfs here, or None."""
    if not sys.platform.startswith("linux") or not shutil.which("unshare"):
        return None
    for prefix in (("unshare", "--mount", "--propagation", "private"),
                   ("unshare", "--user", "--map-root-user", "--mount", "--propagation",
                    "private")):
        if os.geteuid() != 0 and "--user" not in prefix:
            continue
        probe = subprocess.run([*prefix, "sh", "-c", _MOUNT_THEN_RUN, "sh", "1m", "/tmp", "true"],
                               capture_output=True, timeout=30)
        if probe.returncode == 0:
            return prefix
    return None


def on_small_disk(disk: Path, size: str, command: list[str]) -> list[str]:
    """`command` run with a fresh tmpfs of `size` (e.g. "4m") mounted on the folder `disk`;
    skips the test where no mount namespace can be had."""
    prefix = _namespace_prefix()
    if prefix is None:
        pytest.skip("a small tmpfs needs a private mount namespace (root, or user namespaces)")
    disk.mkdir(parents=True, exist_ok=True)
    return [*prefix, "sh", "-c", _MOUNT_THEN_RUN, "sh", size, str(disk), *command]


def kernelpack_on_small_disk(disk: Path, size: str, *args: object) -> dict:
    """`kernelpack ARGS` with a tmpfs of `size` on `disk`: {code, out, err, files (path under
    disk -> size, as left after the command), free (bytes left)}."""
    command = on_small_disk(disk, size, [sys.executable, "-c", _CLI_THEN_LIST,
                                         json.dumps([str(arg) for arg in args]), str(disk)])
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    assert done.returncode == 0 and done.stdout.strip(), done
    return json.loads(done.stdout.strip().splitlines()[-1])
