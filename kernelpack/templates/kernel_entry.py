"""kernelpack kernel entry: predict the test set with the ensemble config embedded below.

Rendered by `kernelpack build`; the config is the validated ensemble YAML, stored as JSON. KEY is
None, or the key that decrypts the .kpenc models (only ever embedded in a private kernel).
USER_CODE names the user's own packages/modules (`--code`), bundled beside inference_core and
imported before any model is built, so that their `register_model` calls have run. Wheel datasets
attached to the kernel are installed before that.

The budget counts from the process start, so the first thing done is the one that makes a
submission exist: the config and the test ids are read and a fallback submission written, with
torch-free modules (`inference_core.startup`). torch comes in with the runner, imported last.
"""

import json
import sys

from inference_core.startup import KernelStart, exit_code, out_of_time, start_kernel
from inference_core.wheel_install import install_wheel_datasets

# Filled in by `kernelpack build` (kernelpack/kernel/build.py's render_entry); the defaults only
# let this module be imported and tested.
CONFIG = json.loads("{}")  # kernelpack: fill
KEY = None  # kernelpack: fill
USER_CODE = []  # kernelpack: fill


def prepare(start: KernelStart, user_code: list[str]) -> None:
    """Install the attached wheel datasets, then import the user's code."""
    # Attached wheel datasets (`kernelpack wheels`) are installed first: the user's code may
    # import their packages.
    install_wheel_datasets(start.config.input_roots, log=lambda line: print(line, flush=True))
    if user_code:
        from inference_core.model_factory import import_modules

        import_modules(user_code)


def start_and_run(config: dict, key: bytes | None, user_code: list[str]) -> None:
    """Write the fallback submission, prepare, then predict unless the deadline has passed."""
    start = start_kernel(config)  # from here on a valid submission exists
    prepare(start, user_code)
    if out_of_time(start.deadlines, start.log, "torch was imported"):
        return
    from inference_core.runner import run_started  # torch, unless the user's code took it in

    run_started(start, key)


def prepare_and_run(config: dict, key: bytes | None, user_code: list[str]) -> int:
    """Write the fallback submission, install the attached wheel datasets, import the user's
    code, predict; the exit code. A failure is one `kernel error:` line on stderr and exit code
    1 (the fallback submission stands when the test ids were read)."""
    return exit_code(lambda: start_and_run(config, key, user_code))


if __name__ == "__main__":  # the bundle runs its entry as __main__
    status = prepare_and_run(CONFIG, KEY, USER_CODE)
    if status:
        sys.exit(status)
