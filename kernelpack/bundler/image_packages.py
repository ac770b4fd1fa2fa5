"""What today's Kaggle Python image ships: the import names a kernel can rely on without vendoring.

The bundler inlines every other third-party package a kernel imports, when it is pure Python and
installed here (e.g. `pretrainedmodels`, and `munch` and `six` that it needs). Keep this list
conservative: a name missing here only costs kernel size, a name wrongly listed costs a failed
kernel after the queue.

Source: Kaggle/docker-python at 78aaa43 (2026-08-12), a Colab runtime base with Python 3.12, and
its `kaggle_requirements.txt` and `tests/` (see research/prior-art.md §7). Not listed on purpose:
`six` (python-dateutil 3+ stopped pulling it in), `pretrainedmodels` and `munch` (absent),
`stickytape` (absent).
"""

from __future__ import annotations

import re

IMAGE_SHIPS = frozenset({
    # the scientific and deep-learning stack of the Colab base
    "numpy", "pandas", "scipy", "sklearn", "statsmodels", "sympy", "networkx", "numba",
    "torch", "torchvision", "torchaudio", "triton", "timm", "transformers", "tokenizers",
    "safetensors", "accelerate", "huggingface_hub", "datasets", "einops",
    "tensorflow", "keras", "jax", "jaxlib",
    "lightgbm", "xgboost", "catboost", "polars", "pyarrow", "h5py", "joblib",
    # images
    "PIL", "cv2", "skimage", "albumentations", "albucore", "imageio", "matplotlib", "seaborn",
    # utilities
    "tqdm", "yaml", "requests", "urllib3", "certifi", "packaging", "typing_extensions",
    "dateutil", "pytz", "psutil", "filelock", "fsspec", "jinja2", "pydantic", "pydantic_core",
    "IPython", "google", "setuptools", "pkg_resources",
    # pycryptodome is in kaggle_requirements.txt; cryptography comes with the Colab base
    "Crypto", "cryptography",
    "kaggle", "kagglehub",
})


def image_ships(name: str) -> bool:
    """True when top-level module `name` is on the Kaggle image (the stdlib is not listed here)."""
    return name in IMAGE_SHIPS


def canonical_name(distribution: str) -> str:
    """A distribution's name as PEP 503 compares them (`Foo_Bar.baz` -> `foo-bar-baz`)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()
