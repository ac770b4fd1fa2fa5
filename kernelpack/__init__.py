"""kernelpack: bundle, encrypt, push and rehearse PyTorch ensembles for offline Kaggle kernels."""

from pathlib import Path

__version__ = "0.1.0"

# The repository root: templates/ and inference_core/ live beside this package.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = PROJECT_ROOT / "templates"
