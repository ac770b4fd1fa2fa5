"""Typed errors raised by the kernel runtime.

Every message names the input, the problem and the fix, so that the one line a kernel prints in
Kaggle's log viewer is enough to act on.
"""


class KernelError(Exception):
    """Base class: a problem the user can fix in their config, data or models."""


class ConfigError(KernelError):
    """The ensemble config is missing a field or holds a bad value."""


class UnknownArchError(KernelError):
    """A checkpoint or config names an architecture the registry does not know."""


class CheckpointError(KernelError):
    """A checkpoint file is missing, unreadable, or not in the kernelpack format."""


class DamagedFileError(KernelError):
    """A model file whose content cannot be read (cut short, tampered, not a checkpoint): an
    optional model in that state is left out of the ensemble, a required one stops the kernel,
    whether it shows at discovery or only when the file is loaded."""


class DamagedCheckpointError(CheckpointError, DamagedFileError):
    """A plain checkpoint file that torch cannot load, or that is not a kernelpack checkpoint."""


class TestSetError(KernelError):
    """The test images or the sample submission cannot be found or read."""

    __test__ = False  # not a pytest test class despite the name


class UserCodeError(KernelError):
    """The user's own code (`--code`, `kernel.code`) cannot be found or imported; the host raises
    it too, as the same code is imported there (import-checkpoint, predict) and in the kernel."""
