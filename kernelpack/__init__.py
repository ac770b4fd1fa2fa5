"""kernelpack: bundle, encrypt, push and rehearse PyTorch ensembles for offline Kaggle kernels."""

from pathlib import Path

__version__ = "0.1.0"

# The repository root in a source checkout (inference_core/ lives beside this package).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Kernel templates travel inside the package (the top-level templates/ is a link to them).
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
