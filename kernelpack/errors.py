"""Typed errors of the host-side tool; the CLI turns them into one line on stderr and exit 1.

Config problems raise `inference_core.errors.ConfigError`, shared with the kernel runtime.
"""


class KernelpackError(Exception):
    """Base class: a problem the user can fix; the message says what and how."""


class BuildError(KernelpackError):
    """`kernelpack build` cannot produce a kernel from these inputs."""


class SandboxError(KernelpackError):
    """`kernelpack run-local` cannot set up or run the offline sandbox."""


class SearchError(KernelpackError):
    """`kernelpack blend search` / `threshold search` cannot fit on these inputs."""
