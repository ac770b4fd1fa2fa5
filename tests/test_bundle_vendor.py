"""Vendoring: what the Kaggle image lacks is inlined from this environment, so a kernel built
by `kernelpack build` builds a pretrainedmodels architecture where that package is missing."""

import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
from bundle_helpers import python_without, run_offline
from PIL import Image

from inference_core.checkpoint import save_checkpoint
from inference_core.model_factory import create_model
from kernelpack.bundler.bundle import Entry, bundle
from kernelpack.errors import BundleError
from kernelpack.kernel.build import ENTRY_NAME, build_kernel

# What a kernel of the runtime imports; build_kernel bundles it the same way.
RUNTIME_ENTRY = Entry(ENTRY_NAME, b"from inference_core.runner import main\n")

SE50_YML = """\
models:
  - {name: se50_f0, path: se-models/se50_f0.pt}
test: {images: tiny/test, sample_submission: tiny/sample_submission.csv}
submission: {format: multiclass}
batch_size: 2
kernel: {id: tester/se50-kernel, competition_sources: [tiny]}
"""


def test_the_runtime_kernel_vendors_pretrainedmodels_and_what_it_imports():
    result = bundle(RUNTIME_ENTRY, vendor=["inference_core"])
    assert result.vendored == ("inference_core", "munch", "pretrainedmodels", "six")
    assert "pretrainedmodels/models/senet.py" in result.files
    assert {"torch", "torchvision", "numpy", "PIL"} <= set(result.from_image)
    assert result.size_bytes <= 250_000


@pytest.fixture
def se50_input(tmp_path):
    """/kaggle/input with one 224x224 test image and an untrained se_resnext50_32x4d."""
    root = tmp_path / "input"
    (root / "tiny" / "test").mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "tiny" / "test" / "a.png")
    (root / "tiny" / "sample_submission.csv").write_text("id,label\na,0\n")
    torch.manual_seed(0)
    model = create_model("se_resnext50_32x4d", num_classes=3)
    save_checkpoint(root / "se-models" / "se50_f0.pt", "se_resnext50_32x4d", 3,
                    {"name": "se50_f0", "fold": 0, "input_size": 224, "resize": "stretch",
                     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                     "activation": "softmax"}, model)
    return root


@pytest.mark.slow
def test_a_built_kernel_runs_se_resnext50_where_pretrainedmodels_is_not_installed(
        se50_input, tmp_path):
    config = tmp_path / "se50.yml"
    config.write_text(SE50_YML)
    kernel = build_kernel(config, tmp_path / "out").kernel
    # The image as the kernel meets it: none of the packages the bundle vendors is installed.
    python = python_without({"pretrainedmodels", "munch", "six"}, tmp_path / "image")
    probe = subprocess.run([python, "-I", "-c", "import pretrainedmodels"], capture_output=True,
                           text=True, cwd=tmp_path)
    assert "No module named 'pretrainedmodels'" in probe.stderr
    work = tmp_path / "kaggle" / "working"
    work.mkdir(parents=True)
    (tmp_path / "kaggle" / "input").symlink_to(se50_input)
    (tmp_path / "kaggle" / "tmp").mkdir()
    done = run_offline(kernel, work, str(python), tmp_path / "kaggle" / "tmp")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "se_resnext50_32x4d" in done.stdout  # the runtime's log names the arch it built
    frame = pd.read_csv(work / "submission.csv", dtype=str)
    assert frame["id"].tolist() == ["a"] and frame["label"][0] in {"0", "1", "2"}


def test_vendor_inlines_a_package_even_when_the_image_ships_it():
    entry = Entry("e.py", b"import typing_extensions\n")
    assert bundle(entry).from_image == ("typing_extensions",)
    forced = bundle(entry, vendor=["typing_extensions"])
    assert forced.vendored == ("typing_extensions",) and "typing_extensions.py" in forced.files


def test_a_compiled_package_the_image_lacks_is_refused_with_a_wheel_hint():
    with pytest.raises(BundleError, match=r"_cffi_backend is a compiled extension module.*upload "
                                          r"it as a Kaggle dataset.*--exclude _cffi_backend"):
        bundle(Entry("e.py", b"import _cffi_backend\n"))
    assert bundle(Entry("e.py", b"import _cffi_backend\n"), exclude=["_cffi_backend"]).files \
        == ("e.py",)


def test_vendoring_a_package_that_is_not_installed_is_refused():
    with pytest.raises(BundleError, match="--vendor no_such_pkg_kp: not installed in this "
                                          "environment"):
        bundle(Entry("e.py", b"print(1)\n"), vendor=["no_such_pkg_kp"])
