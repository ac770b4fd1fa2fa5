"""kernelpack kernel entry: predict the test set with the ensemble config embedded below.

Rendered by `kernelpack build`; the config is the validated ensemble YAML, stored as JSON.
"""

import json
import sys

from inference_core.runner import main

CONFIG = json.loads(__KERNELPACK_CONFIG_JSON__)

exit_code = main(CONFIG)
if exit_code:
    sys.exit(exit_code)
