"""The launcher a kernel run of the local service goes through: a Kaggle-like container.

Run as `python -I jail.py SPEC.json -- COMMAND...` (standard library only: it starts before, and
outside of, anything kernelpack imports). It writes its pid to the spec's pid file (the process
group the service kills when it stops) and asks the kernel to kill it if the service dies. Then,
when the spec says `isolate`, it re-runs itself under `unshare` in new mount, pid and network
namespaces and, as pid 1 there, builds a new root on a tmpfs that holds only:

- the system (`/usr`, `/etc` and the `/bin`-style links, read-only), the Python installation
  (its prefixes, read-only), `/dev/null`-style devices and GPUs, a fresh `/proc`, `/sys`
  read-only, an empty `/tmp` and `/dev/shm` (tmpfs of the spec's `scratch_bytes` each: memory,
  so capped);
- the run's own folder (read-write) and each attached source, bound read-only at its mount point
  under the run's `input/`, at the same absolute paths as outside, so nothing in the command
  changes.

Everything else (the service's state folder with other users' files and held-back labels, the
operator's home and credentials, other processes) does not exist in that root. It then drops to
an unprivileged user (nobody) with no capabilities and no way back (no_new_privs), so the kernel
cannot mount, chroot or read raw devices, and executes COMMAND. Killing the process group, or the
service dying, ends pid 1 and with it every process of the run.

Without `isolate` (no namespaces here) it only writes the pid file and executes COMMAND.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_BIND = 1, 2, 4, 32, 4096
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_DEVICES = ("null", "zero", "full", "random", "urandom")
_NOBODY = 65534
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    _check(_libc.mount(*(None if text is None else text.encode()
                         for text in (source, target, fstype)), flags,
                       None if data is None else data.encode()),
           f"mount {source} on {target}")


def _inside(new_root: str, path: str) -> str:
    return os.path.join(new_root, path.lstrip("/"))


def _bind(source: str, new_root: str, target: str | None = None, writable: bool = False) -> None:
    """Bind `source` at the same path (or `target`) under `new_root`, read-only unless asked."""
    if not os.path.exists(source):
        return
    where = _inside(new_root, target or source)
    if os.path.isdir(source):
        os.makedirs(where, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(where), exist_ok=True)
        open(where, "a").close()
    _mount(source, where, None, _MS_BIND)
    flags = _MS_BIND | _MS_REMOUNT | _MS_NOSUID | (0 if writable else _MS_RDONLY)
    if not source.startswith("/dev/"):
        flags |= _MS_NODEV
    _mount(None, where, None, flags)


def _link_like_host(path: str, new_root: str) -> None:
    """`/bin` -> `usr/bin` and the like, as links when they are links here."""
    if os.path.islink(path):
        os.symlink(os.readlink(path), _inside(new_root, path))
    else:
        _bind(path, new_root)


def _build_root(spec: dict) -> str:
    new_root = spec["new_root"]
    scratch = f"mode=1777,size={int(spec['scratch_bytes'])}"
    _mount("tmpfs", new_root, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=755")
    for path in ("/usr", "/etc"):
        _bind(path, new_root)
    for path in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.lexists(path):
            _link_like_host(path, new_root)
    # /tmp before the Python prefixes: a virtual environment may live under /tmp (a CI clone).
    for name, fstype, mode in (("tmp", "tmpfs", scratch), ("proc", "proc", None)):
        os.makedirs(_inside(new_root, name), exist_ok=True)
        _mount(fstype, _inside(new_root, name), fstype, _MS_NOSUID | _MS_NODEV, mode)
    for prefix in spec["python"]:
        _bind(prefix, new_root)
    # A prefix may hold the state folder; hide it again before the run's own binds go on top.
    state = _inside(new_root, spec["state"])
    if os.path.isdir(state):
        _mount("tmpfs", state, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=755")
    dev = _inside(new_root, "/dev")
    os.makedirs(dev, exist_ok=True)
    _mount("tmpfs", dev, "tmpfs", _MS_NOSUID, "mode=755")
    for name in _DEVICES:
        _bind(f"/dev/{name}", new_root)
    for name in sorted(os.listdir("/dev")):
        if name.startswith("nvidia"):        # GPUs, as a Kaggle GPU session has them
            _bind(f"/dev/{name}", new_root)
    os.makedirs(os.path.join(dev, "shm"))
    _mount("tmpfs", os.path.join(dev, "shm"), "tmpfs", _MS_NOSUID | _MS_NODEV, scratch)
    for number, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{number}", os.path.join(dev, name))
    os.symlink("/proc/self/fd", os.path.join(dev, "fd"))
    _bind("/sys", new_root)
    # Last, so that no tmpfs above (/tmp, the state folder) covers them.
    for path in spec["writable"]:
        _bind(path, new_root, writable=True)
    for target, source in spec["read_only"]:
        _bind(source, new_root, target)
    return new_root


def _enter(spec: dict, command: list[str]) -> None:
    cwd = os.getcwd()
    # The run writes as nobody, only in these (its working and temp folders): the folders
    # around them, with the log the service reads back, stay root's, so it cannot swap in links.
    for path in spec["owned_by_run"]:
        for folder, _, files in os.walk(path):
            for name in [folder, *(os.path.join(folder, f) for f in files)]:
                os.lchown(name, _NOBODY, _NOBODY)
    new_root = _build_root(spec)
    os.chroot(new_root)
    os.chdir(cwd)
    os.setgroups([])
    os.setgid(_NOBODY)
    os.setuid(_NOBODY)
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    # Changing user cleared the signal unshare --kill-child set: die with unshare again.
    _check(_libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "parent-death signal")
    os.execvp(command[0], command)


def main(argv: list[str]) -> None:
    spec_path, command = argv[0], argv[argv.index("--") + 1:]
    with open(spec_path, encoding="utf-8") as stream:
        spec = json.load(stream)
    if len(argv) > 1 and argv[1] == "--inside":
        try:
            _enter(spec, command)
        except OSError as exc:
            print(f"kernelpack service: the run's container could not be built: {exc}",
                  flush=True)
            os._exit(1)
    with open(spec["pid_file"], "w", encoding="utf-8") as stream:
        stream.write(str(os.getpid()))
    # If the service dies without stopping the run, the run dies with it (and if it died
    # before this line, the run does not start).
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != spec["parent"]:
        os._exit(1)
    if not spec["isolate"]:
        os.execvp(command[0], command)
    os.execvp("unshare", ["unshare", "--mount", "--pid", "--net", "--fork", "--kill-child",
                          "--propagation", "private", sys.executable, "-I", __file__, spec_path,
                          "--inside", "--", *command])


if __name__ == "__main__":
    main(sys.argv[1:])
