"""kernelpack kernel entry: predict the test set with the ensemble config embedded below.

Rendered by `kernelpack build`; the config is the validated ensemble YAML, stored as JSON. KEY is
None, or the key that decrypts the .kpenc models (only ever embedded in a private kernel).
"""

import json
import sys

from inference_core.runner import main

CONFIG = json.loads(__KERNELPACK_CONFIG_JSON__)
KEY = __KERNELPACK_KEY__

exit_code = main(CONFIG, key=KEY)
if exit_code:
    sys.exit(exit_code)
