"""Runs first in run-local's sandboxed interpreter: the import hook that hides what the Kaggle
image lacks, death with run-local, and the network cut when no network namespace is available.

kernelpack/kernel/sandbox.py inlines this module's text with SETTINGS filled in, followed by one
line that says what runs next: `run_script()` for a script kernel (`python -I -c PROGRAM
SCRIPT`), `start_ipykernel()` for a notebook's Jupyter kernel (`python -I kernel_boot.py -f
CONNECTION_FILE`), or the notebook runner's source. Standard library only: the sandbox cannot
import kernelpack. sys.path is left whole: the paths present at boot are the host's installation.
"""

import json
import os
import runpy
import sys
from importlib.machinery import PathFinder

# Filled in by run-local: the top-level names to hide, whether to cut the network in-process, and
# the pid of the process to die with (None: none; 0: the parent, whichever it is).
SETTINGS = json.loads('{"hidden": [], "socket_guard": false, "parent": null}')  # kernelpack: fill


class KernelOwnPaths:
    """Finds a hidden name on the paths the kernel added (its bundle, a wheel dataset) only."""

    def __init__(self, hidden: frozenset[str], host_paths: frozenset[str]) -> None:
        self.hidden, self.host_paths = hidden, host_paths

    def find_spec(self, name, path=None, target=None):
        if path is not None or name not in self.hidden:
            return None
        return PathFinder.find_spec(name, [p for p in sys.path if p not in self.host_paths])


class HostHidden:
    """Wraps a finder of this installation: it does not see hidden names, so a probe such as
    importlib.util.find_spec answers None, as on Kaggle."""

    def __init__(self, finder, hidden: frozenset[str]) -> None:
        self.finder, self.hidden = finder, hidden

    def find_spec(self, name, path=None, target=None):
        if path is None and name in self.hidden:
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(name, path, target) if find else None

    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)


def hide(names: list[str]) -> None:
    """Hide the top-level `names` from this installation's finders, not from the kernel's own
    paths."""
    hidden = frozenset(names)
    sys.meta_path[:] = [KernelOwnPaths(hidden, frozenset(sys.path)),
                        *(HostHidden(finder, hidden) for finder in sys.meta_path)]


def die_with_parent(parent: int) -> None:
    """Die with the parent, even if it is killed outright (SIGKILL): run-local itself (no
    launcher between; checked after, in case it died before), or a notebook's runner (0)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass
    if parent and os.getppid() != parent:
        raise SystemExit("kernelpack run-local has gone; not running the kernel")


def cut_network() -> None:
    """Sockets refuse to connect or resolve, as with the internet off."""
    import socket

    def offline(*args, **kwargs):
        raise OSError(101, "Network is unreachable (kernelpack sandbox: internet is off)")

    socket.socket.connect = socket.socket.connect_ex = offline
    socket.create_connection = socket.getaddrinfo = offline


def boot(settings: dict) -> None:
    hide(settings["hidden"])
    if settings["parent"] is not None:
        die_with_parent(settings["parent"])
    if settings["socket_guard"]:
        cut_network()


def run_script() -> None:
    """`python -I -c PROGRAM SCRIPT`: run SCRIPT as __main__, as `python SCRIPT` does."""
    script = sys.argv[1]
    sys.argv = [script]
    runpy.run_path(script, run_name="__main__")


def start_ipykernel() -> None:
    """`python -I kernel_boot.py -f CONNECTION_FILE`: become the notebook's Jupyter kernel."""
    sys.argv = ["ipykernel_launcher", *sys.argv[1:]]
    runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    boot(SETTINGS)
