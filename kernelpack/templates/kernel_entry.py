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

CONFIG = json.loads(__KERNELPACK_CONFIG_JSON__)
KEY = __KERNELPACK_KEY__
USER_CODE = __KERNELPACK_USER_CODE__

# Attached wheel datasets (`kernelpack wheels`) are installed first: the user's code may import
# their packages.
try:
    install_wheel_datasets(CONFIG.get("input_roots"), log=lambda line: print(line, flush=True))
except WheelInstallError as exc:
    print(f"kernel error: {exc}", file=sys.stderr, flush=True)
    sys.exit(1)

if USER_CODE:
    from inference_core.errors import UserCodeError
    from inference_core.model_factory import import_modules

    try:
        import_modules(USER_CODE)
    except UserCodeError as exc:  # one line, as `main` reports its own errors
        print(f"kernel error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)

exit_code = main(CONFIG, key=KEY)
if exit_code:
    sys.exit(exit_code)
