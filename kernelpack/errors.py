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


class BundleError(KernelpackError):
    """`kernelpack bundle` (and build) cannot make a working single-file script of these inputs."""


class KaggleError(KernelpackError):
    """A Kaggle call (or one to the local service) failed or was refused; says which and why."""


class KaggleAuthError(KaggleError):
    """No usable Kaggle credentials; the message says where to put them."""


class KaggleUploadError(KaggleError):
    """A file did not arrive whole; nothing is reported as pushed that is not there."""


class KaggleModelHandleError(KaggleError):
    """A Kaggle Model handle (OWNER/MODEL/FRAMEWORK/VARIATION) is malformed; found before any
    call is sent."""


class KaggleServiceError(KernelpackError):
    """The local Kaggle service cannot start with these settings (competition, fault, port)."""


class KaggleNotFoundError(KaggleError):
    """The dataset, kernel, competition or submission asked for does not exist (HTTP 404)."""


class CheckpointImportError(KernelpackError):
    """`kernelpack import-checkpoint` cannot turn this weights file into a kernelpack checkpoint."""


class PredictError(KernelpackError):
    """`kernelpack predict` cannot run on these inputs, or its output cannot be compared."""


class PrototypeError(KernelpackError):
    """`kernelpack prototypes` cannot build class prototypes from these inputs."""


class MissingExtraError(KernelpackError):
    """A command needs an optional part of kernelpack that is not installed (kernelpack.extras)."""
