"""kernelpack installed from its wheel, not from this checkout: the wheel carries every file of
the two packages, and `kernelpack build`, `bundle` and `run-local` work from a fresh venv.

The venv reuses the big packages of the running environment (torch takes minutes to install) as
links in its own site-packages, beside the installed kernelpack, as a real install lays them out;
the editable install of this checkout is left out, so the checkout stays invisible."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pandas as pd
import pytest

# Builds kernelpack's wheel and installs it into a fresh virtual environment.
pytestmark = pytest.mark.slow

CHECKOUT = Path(__file__).resolve().parent.parent
PACKAGES = ("kernelpack", "inference_core")
SCRIPT = '''\
import json
from helper import greet

print(json.dumps({"greeting": greet("wheel")}))
'''


def _run(command, cwd, **kwargs):
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180, **kwargs)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _source_files(root):
    return sorted(str(p.relative_to(root)) for package in PACKAGES
                  for p in (root / package).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the wheel, the venv's bin folder) with kernelpack installed from the wheel."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    source.mkdir()
    # A copy, so the build's build/ and egg-info/ folders never land in the checkout.
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(CHECKOUT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run([sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", base / "dist"], base)
    wheel, = (base / "dist").glob("kernelpack-*.whl")

    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], base)
    site_packages, = venv.glob("lib/python*/site-packages")
    for host in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in Path(host).iterdir():
            if not entry.name.startswith(("kernelpack", "inference_core", "__editable__")) \
                    and not (site_packages / entry.name).exists():
                (site_packages / entry.name).symlink_to(entry)
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install",
          "--no-deps", "--no-index", "-q", wheel], base)
    return wheel, venv / "bin", source


def test_the_wheel_carries_every_file_of_both_packages(installed):
    wheel, _, source = installed
    with zipfile.ZipFile(wheel) as archive:
        packed = set(archive.namelist())
    missing = [name for name in _source_files(source) if name not in packed]
    assert not missing, f"not in the wheel (see setup.cfg [options.package_data]): {missing}"
    assert "kernelpack/templates/kernel_entry.py" in packed


def test_build_bundle_and_run_local_work_from_the_installed_wheel(installed, ensemble_yml,
                                                                  digits_input, tmp_path):
    _, bin_dir, _ = installed
    where = _run([bin_dir / "python", "-c", "import kernelpack, inference_core; "
                  "print(kernelpack.__file__); print(inference_core.__file__)"], tmp_path)
    assert all(line.startswith(str(bin_dir.parent)) for line in where.split()), where

    _run([bin_dir / "kernelpack", "build", ensemble_yml, "-o", tmp_path / "out"], tmp_path)
    assert (tmp_path / "out" / "kernel-metadata.json").is_file()

    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text(SCRIPT)
    (tmp_path / "app" / "helper.py").write_text("def greet(name):\n    return f'hi {name}'\n")
    _run([bin_dir / "kernelpack", "bundle", tmp_path / "app" / "main.py", "-o",
          tmp_path / "one.py"], tmp_path)
    assert _run([sys.executable, "-I", tmp_path / "one.py"], tmp_path).strip() == \
        '{"greeting": "hi wheel"}'

    report = _run([bin_dir / "kernelpack", "run-local", tmp_path / "out", "--input",
                   digits_input], tmp_path)
    submission = tmp_path / "out" / "sandbox" / "working" / "submission.csv"
    assert submission.is_file(), report
    frame = pd.read_csv(submission, dtype=str)
    expected = pd.read_csv(digits_input / "digits" / "sample_submission.csv", dtype=str)
    assert frame["id"].tolist() == expected["id"].tolist()
    assert set(frame["label"]) <= {str(d) for d in range(10)}
