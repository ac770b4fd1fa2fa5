"""kernelpack kernel entry: predict the test set with the ensemble config embedded below.

Rendered by `kernelpack build`; the config is the validated ensemble YAML, stored as JSON. KEY is
None, or the key that decrypts the .kpenc models (only ever embedded in a private kernel).
USER_CODE names the user's own packages/modules (`--code`), bundled beside inference_core and
imported before any model is built, so that their `register_model` calls have run. Wheel datasets
attached to the kernel are installed before that.
"""

import json
import sys

from inference_core.runner import main
from inference_core.wheel_install import WheelInstallError, install_wheel_datasets

# Filled in by `kernelpack build` (kernelpack/kernel/build.py's render_entry); the defaults only
# let this module be imported and tested.
CONFIG = json.loads("{}")  # kernelpack: fill
KEY = None  # kernelpack: fill
USER_CODE = []  # kernelpack: fill


def prepare_and_run(config: dict, key: bytes | None, user_code: list[str]) -> int:
    """Install the attached wheel datasets, import the user's code, predict; the exit code. A
    failure before the prediction is one `kernel error:` line on stderr and exit code 1."""
    # Attached wheel datasets (`kernelpack wheels`) are installed first: the user's code may
    # import their packages.
    try:
        install_wheel_datasets(config.get("input_roots"), log=lambda line: print(line, flush=True))
    except WheelInstallError as exc:
        print(f"kernel error: {exc}", file=sys.stderr, flush=True)
        return 1

    if user_code:
        from inference_core.errors import UserCodeError
        from inference_core.model_factory import import_modules

        try:
            import_modules(user_code)
        except UserCodeError as exc:  # one line, as `main` reports its own errors
            print(f"kernel error: {exc}", file=sys.stderr, flush=True)
            return 1

    return main(config, key=key)


if __name__ == "__main__":  # the bundle runs its entry as __main__
    exit_code = prepare_and_run(CONFIG, KEY, USER_CODE)
    if exit_code:
        sys.exit(exit_code)
