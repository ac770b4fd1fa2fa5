"""Wheel datasets: `kernelpack wheels` downloads a real C extension for Kaggle's platform, and a
kernel built with `--wheels` installs it offline in the sandbox and computes with it.

The package is bottleneck (C extension, depends on numpy): on neither the Kaggle image nor this
environment, and small. pip gets it from this machine's local package index when there is one
(/opt/pypi/simple), else from its configured index; numpy, which the image ships, is left out.
"""

import csv
import dataclasses
import importlib.util
import json
import shutil
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from kaggle_helpers import USER, dataset_folder, kaggle_world
from PIL import Image
from torch import nn

from inference_core import save_checkpoint
from inference_core.wheel_install import (
    MANIFEST_FILE,
    WheelInstallError,
    find_wheel_datasets,
    install_wheel_dataset,
)
from kernelpack.cli import main
from kernelpack.kaggle.service import add_competition
from kernelpack.kernel.sandbox import run_local

PACKAGE = "bottleneck"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
OTHER_PYTHON = "3.12" if PYTHON == "3.11" else "3.11"
LOCAL_INDEX = Path("/opt/pypi/simple")
DATASET_ID = "tester/bottleneck-wheels"
SIZE, CLASSES = 8, 3
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]

# The user's code: a model whose forward needs the wheel's C extension (bottleneck.nanmean over
# the pixels, then a linear head). It says where bottleneck was imported from.
USER_MODULE = '''\
import bottleneck
import torch
from torch import nn

print(f"user code: bottleneck {bottleneck.__version__} from {bottleneck.__file__}", flush=True)


class NanMeanHead(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.head = nn.Linear(3, num_classes)

    def forward(self, x):
        pixels = x.detach().cpu().numpy().reshape(x.shape[0], x.shape[1], -1)
        return self.head(torch.from_numpy(bottleneck.nanmean(pixels, axis=2)).to(x.dtype))


def build(num_classes):
    return NanMeanHead(num_classes)
'''


class _SameWeights(nn.Module):
    """The host's twin of NanMeanHead (same parameters; bottleneck is not installed here)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, CLASSES)


@pytest.fixture(scope="module")
def pip_source(tmp_path_factory):
    """pip's index for the downloads: the local one when this machine has the package there."""
    patch = pytest.MonkeyPatch()
    if (LOCAL_INDEX / PACKAGE).is_dir():
        patch.setenv("PIP_INDEX_URL", LOCAL_INDEX.as_uri())
    yield
    patch.undo()


@pytest.fixture(scope="module")
def wheel_dataset(pip_source, tmp_path_factory):
    """`kernelpack wheels bottleneck` for this Python, into input/bottleneck-wheels/."""
    assert importlib.util.find_spec(PACKAGE) is None, "the test needs bottleneck not installed"
    folder = tmp_path_factory.mktemp("input") / "bottleneck-wheels"
    code = main(["wheels", PACKAGE, "-o", str(folder), "--python", PYTHON, "--id", DATASET_ID])
    assert code == 0
    return folder


def test_the_dataset_holds_the_c_extension_and_leaves_out_what_the_image_ships(wheel_dataset):
    manifest = json.loads((wheel_dataset / MANIFEST_FILE).read_text())
    assert manifest["python"] == PYTHON and manifest["requested"] == [PACKAGE]
    assert [(w["name"], w["modules"]) for w in manifest["wheels"]] == [(PACKAGE, [PACKAGE])]
    wheel = manifest["wheels"][0]["file"]
    assert f"-cp{PYTHON.replace('.', '')}-" in wheel and "manylinux" in wheel and "x86_64" in wheel
    # numpy, a dependency, is on the image: listed as left out, its wheel not in the folder.
    assert [w["name"] for w in manifest["left_out"]] == ["numpy"]
    assert sorted(p.name for p in wheel_dataset.iterdir()) == sorted(
        [wheel, MANIFEST_FILE, "dataset-metadata.json"])
    assert json.loads((wheel_dataset / "dataset-metadata.json").read_text())["id"] == DATASET_ID


def _test_images(folder):
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True)
    ids = [f"img{i}" for i in range(6)]
    for name in ids:
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{name}.png")
    return ids


def _reference(model, paths):
    """Plain PIL and numpy: RGB, /255, normalise, the mean over pixels, the head, softmax."""
    batch = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0
                      for p in paths])
    batch = (batch - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    with torch.no_grad():
        logits = model.head(torch.from_numpy(batch.mean(axis=(1, 2))))
    return logits.softmax(1).double().numpy()


@pytest.fixture(scope="module")
def kernel(wheel_dataset, tmp_path_factory):
    """A kernel built with --wheels whose user code imports bottleneck; (kernel dir, input, ids,
    the model's host twin)."""
    base = tmp_path_factory.mktemp("kernel")
    input_dir = wheel_dataset.parent
    ids = _test_images(input_dir / "comp" / "test")
    with open(input_dir / "comp" / "sample_submission.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["id"]] + [[i] for i in ids])
    torch.manual_seed(5)
    twin = _SameWeights()
    with torch.no_grad():
        twin.head.weight.mul_(8.0)  # confident outputs, so that a wrong computation shows
    save_checkpoint(input_dir / "models" / "nanmean.pt", "kp_wheel_user:build", CLASSES,
                    {"name": "nanmean", "input_size": SIZE, "resize": "stretch", "mean": MEAN,
                     "std": STD, "activation": "softmax"}, twin)
    (base / "kp_wheel_user.py").write_text(USER_MODULE)
    config = base / "wheel-kernel.yml"
    config.write_text(json.dumps({
        "models": [{"name": "nanmean"}], "tta": ["identity"], "batch_size": 4,
        "test": {"images": "comp/test", "sample_submission": "comp/sample_submission.csv",
                 "pattern": "*.png"},
        "submission": {"format": "probabilities"}, "blend": "mean",
        "kernel": {"id": "tester/wheel-kernel"}}))
    out = base / "out"
    assert main(["build", str(config), "-o", str(out), "--code", str(base / "kp_wheel_user.py"),
                 "--wheels", str(wheel_dataset)]) == 0
    return out, input_dir, ids, twin


def test_build_without_the_wheel_dataset_names_kernelpack_wheels(kernel, tmp_path, capsys):
    out, _, _, _ = kernel
    code = main(["build", str(out.parent / "wheel-kernel.yml"), "-o", str(tmp_path / "k"),
                 "--code", str(out.parent / "kp_wheel_user.py")])
    err = capsys.readouterr().err
    assert code == 1 and "import bottleneck" in err and "kernelpack wheels PKG -o DIR" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_kernel_installs_the_wheels_offline_and_computes_with_them(kernel):
    # End to end (10-30 s): a kernel in a fresh `python -I`, network cut, pip from the dataset.
    out, input_dir, ids, twin = kernel
    metadata = json.loads((out / "kernel-metadata.json").read_text())
    assert DATASET_ID in metadata["dataset_sources"]

    result = run_local(out, input_dir)
    log = result.log.read_text()
    assert result.returncode == 0, log
    installed = [line for line in log.splitlines() if line.startswith("wheels: installed")]
    assert installed == [f"wheels: installed 1 from ../input/bottleneck-wheels: {PACKAGE} "
                         + json.loads((input_dir / "bottleneck-wheels" / MANIFEST_FILE)
                                      .read_text())["wheels"][0]["version"]], log
    # Imported from the install under the sandbox's temporary folder, not from this machine.
    origin = next(line for line in log.splitlines() if line.startswith("user code: bottleneck"))
    assert f" from {result.root / 'temp'}/kernelpack-wheels-" in origin, origin
    assert importlib.util.find_spec(PACKAGE) is None  # this environment is left alone

    with open(result.submission, newline="") as handle:
        rows = list(csv.reader(handle))
    assert [row[0] for row in rows[1:]] == ids
    got = np.array([[float(v) for v in row[1:]] for row in rows[1:]])
    expected = _reference(twin, [input_dir / "comp" / "test" / f"{i}.png" for i in ids])
    assert np.abs(got - expected).max() < 1e-5
    assert np.abs(expected - 1 / CLASSES).max() > 0.1  # not vacuous: far from uniform


@pytest.mark.slow
def test_a_fanout_shard_attaches_the_wheel_dataset_and_computes_with_its_package(kernel,
                                                                                tmp_path):
    from kernelpack.config import load_config
    from kernelpack.errors import BundleError
    from kernelpack.fanout.assemble import check_output
    from kernelpack.fanout.plan import plan_shards
    from kernelpack.fanout.run import _discover, _members, _rows
    from kernelpack.fanout.shard_kernel import ShardKernels
    from kernelpack.kernel.build import wheel_sources
    from kernelpack.kernel.wheels import dataset_modules

    out, input_dir, ids, twin = kernel
    config_path, user_code = out.parent / "wheel-kernel.yml", [out.parent / "kp_wheel_user.py"]
    host = load_config(config_path)
    with pytest.raises(BundleError, match=r"then build or fanout with --wheels DIR"):
        _ = ShardKernels(host, config_path, user_code, None, USER).code_digest
    host = dataclasses.replace(host, kernel=wheel_sources(host.kernel, [input_dir /
                                                                         "bottleneck-wheels"]))
    kernels = ShardKernels(host, config_path, user_code, None, USER,
                           from_wheels=dataset_modules(input_dir / "bottleneck-wheels"))
    rows = _rows(host.ensemble, input_dir / "comp" / "test",
                 input_dir / "comp" / "sample_submission.csv")
    members = _members(host.ensemble, _discover(host.ensemble, [input_dir / "models"],
                                                lambda _: None))
    [shard] = plan_shards(members, rows, None, config=host.ensemble.to_dict(),
                          code_digest=kernels.code_digest, images="comp/test",
                          rows_per_shard=100, models_per_shard=1)
    folder = kernels.write(shard, shard.spec(rows, "comp/test"), tmp_path / "shard")
    metadata = json.loads((folder / "kernel-metadata.json").read_text())
    assert DATASET_ID in metadata["dataset_sources"]
    result = run_local(folder, input_dir)
    log = result.log.read_text()
    assert result.returncode == 0, log
    assert "wheels: installed 1 from ../input/bottleneck-wheels" in log
    check_output(result.root / "working", shard, rows)
    expected = _reference(twin, [input_dir / "comp" / "test" / f"{i}.png" for i in ids])
    got = np.load(result.root / "working" / "member-0.npy")
    assert np.abs(got - expected).max() < 1e-5


@pytest.mark.slow
def test_a_dataset_for_another_python_is_one_kernel_error(kernel, tmp_path):
    out, input_dir, _, _ = kernel
    wrong = tmp_path / "input"
    wrong.mkdir()
    for entry in input_dir.iterdir():
        if entry.name != "bottleneck-wheels":
            (wrong / entry.name).symlink_to(entry)
    copy = wrong / "old-wheels"
    copy.mkdir()
    manifest = json.loads((input_dir / "bottleneck-wheels" / MANIFEST_FILE).read_text())
    for wheel in manifest["wheels"]:
        (copy / wheel["file"]).symlink_to(input_dir / "bottleneck-wheels" / wheel["file"])
    (copy / MANIFEST_FILE).write_text(json.dumps({**manifest, "python": OTHER_PYTHON}))
    result = run_local(out, wrong, root=tmp_path / "sandbox")
    log = result.log.read_text()
    errors = [line for line in log.splitlines() if line.startswith("kernel error:")]
    assert result.returncode == 1 and "Traceback" not in log, log
    assert len(errors) == 1 and f"kernelpack wheels ... --python {PYTHON}" in errors[0], log
    assert "old-wheels" in errors[0]


def test_a_broken_wheel_fails_with_pips_reason(wheel_dataset, tmp_path):
    manifest = json.loads((wheel_dataset / MANIFEST_FILE).read_text())
    broken = tmp_path / "datasets" / "owner" / "broken"
    broken.mkdir(parents=True)
    (broken / manifest["wheels"][0]["file"]).write_bytes(b"not a zip")
    (broken / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert find_wheel_datasets([str(tmp_path)]) == [broken]  # found in Kaggle's newer layout
    with pytest.raises(WheelInstallError, match=r"broken: pip install failed: .*rebuild"):
        install_wheel_dataset(broken, tmp_path / "target")


@pytest.mark.parametrize("field,value", [("name", "--index-url=http://127.0.0.1:9/simple"),
                                         ("version", "1 -r /etc/passwd")])
def test_a_manifest_whose_name_or_version_reads_as_a_pip_option_is_refused(
        wheel_dataset, tmp_path, field, value):
    manifest = json.loads((wheel_dataset / MANIFEST_FILE).read_text())
    hostile = tmp_path / "hostile"
    shutil.copytree(wheel_dataset, hostile)
    manifest["wheels"][0][field] = value
    (hostile / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(WheelInstallError, match=r"is not a package name and version"):
        install_wheel_dataset(hostile, tmp_path / "target")
    assert not (tmp_path / "target").exists()


def _sdist_only(folder, name="kp_sdist_only"):
    """A find-links folder holding one package as a source distribution only."""
    project = folder / "src" / f"{name}-1.0"
    project.mkdir(parents=True)
    (project / "setup.py").write_text(textwrap.dedent(f"""
        from setuptools import setup
        setup(name="{name}", version="1.0", py_modules=["{name}"])
    """))
    (project / f"{name}.py").write_text("VALUE = 1\n")
    links = folder / "links"
    links.mkdir()
    with tarfile.open(links / f"{name}-1.0.tar.gz", "w:gz") as archive:
        archive.add(project, arcname=project.name)
    return links


def test_a_package_without_a_wheel_for_kaggle_is_one_line_naming_the_fix(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(_sdist_only(tmp_path)))
    code = main(["wheels", "kp-sdist-only==1.0", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("kernelpack: error: kp-sdist-only==1.0: no wheel for Kaggle's "
                             "platform (CPython 3.12, manylinux x86_64"), err
    assert "pip wheel kp-sdist-only==1.0 -w DIR" in err[0] and "PIP_FIND_LINKS=DIR" in err[0]
    assert not (tmp_path / "out").exists()


def test_asking_for_a_package_the_image_ships_is_refused(pip_source, tmp_path, capsys):
    code = main(["wheels", "numpy", "-o", str(tmp_path / "out"), "--python", PYTHON])
    err = capsys.readouterr().err
    assert code == 1 and "numpy: the Kaggle image ships it already" in err
    assert not (tmp_path / "out").exists()


def _wheel(links, name, modules, requires=()):
    """A pure-Python wheel `name` 1.0 in `links` installing `modules`, requiring `requires`."""
    links.mkdir(exist_ok=True)
    info = f"{name}-1.0.dist-info"
    metadata = "".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
                        *(f"Requires-Dist: {r}\n" for r in requires),
                        "\nRequires-Dist: not-a-header (the description)\n"])
    with zipfile.ZipFile(links / f"{name}-1.0-py3-none-any.whl", "w") as archive:
        for module in modules:
            archive.writestr(f"{module}/__init__.py", "")
        archive.writestr(f"{info}/METADATA", metadata)
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                                          "Root-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")


def test_what_only_the_images_packages_need_is_left_out(tmp_path, monkeypatch, capsys):
    # kp_top needs kp_leaf and timm (on the image); timm needs kp_cuda_libs, which nothing else
    # needs (as torch needs its CUDA wheels), and kp_shared, which kp_leaf needs too; kp_leaf
    # needs setuptools, which the image has.
    links = tmp_path / "links"
    _wheel(links, "kp_top", ["kp_top"], ["kp-leaf>=1", "timm ; python_version >= '3'"])
    _wheel(links, "kp_leaf", ["kp_leaf"], ["KP.Shared", "setuptools"])
    _wheel(links, "setuptools", ["setuptools", "pkg_resources", "_distutils_hack"])
    _wheel(links, "timm", ["timm", "timm_extras"], ["kp_cuda_libs", "kp_shared"])
    _wheel(links, "kp_cuda_libs", ["kp_cuda"])
    _wheel(links, "kp_shared", ["kp_shared"])
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    out = tmp_path / "out"
    assert main(["wheels", "kp-top", "-o", str(out), "--python", PYTHON]) == 0
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert sorted(w["name"] for w in manifest["wheels"]) == ["kp_leaf", "kp_shared", "kp_top"]
    assert sorted(w["name"] for w in manifest["left_out"]) == ["kp_cuda_libs", "setuptools",
                                                                "timm"]
    assert sorted(p.name for p in out.glob("*.whl")) == [
        f"{name}-1.0-py3-none-any.whl" for name in ("kp_leaf", "kp_shared", "kp_top")]
    assert "left out (on the Kaggle image, or needed only by what is): " in capsys.readouterr().out


@pytest.mark.parametrize("asked, downloads", [("torch==2.0", False), ("PyYAML", True)])
def test_a_package_the_image_ships_is_refused_whatever_else_its_wheel_holds(
        tmp_path, monkeypatch, capsys, asked, downloads):
    # torch is refused by name before pip runs (nothing here could serve it); PyYAML's wheel
    # (modules yaml and _yaml) only once downloaded.
    _wheel(tmp_path / "links", "PyYAML", ["yaml", "_yaml"])
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "links"))
    code = main(["wheels", asked, "-o", str(tmp_path / "out"), "--python", PYTHON])
    captured = capsys.readouterr()
    assert code == 1 and "the Kaggle image ships it already" in captured.err, captured
    assert ("  | " in captured.out) == downloads
    assert not (tmp_path / "out").exists()


@pytest.fixture
def world(tmp_path, monkeypatch):
    yield from kaggle_world(tmp_path, monkeypatch)


@pytest.mark.slow
def test_pushed_wheel_dataset_is_installed_by_a_kernel_the_local_service_runs(
        world, kernel, tmp_path):
    # Against the local service with the real kaggle client (10-30 s): the wheel dataset and the
    # model are pushed as datasets, the kernel built with --wheels names both, and runs offline.
    out, input_dir, ids, _ = kernel
    wheels = shutil.copytree(input_dir / "bottleneck-wheels", tmp_path / "bottleneck-wheels")
    models = dataset_folder(tmp_path / "wheel-models", "wheel-models", {
        "nanmean.pt": (input_dir / "models" / "nanmean.pt").read_bytes()})
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\n" + "".join(f"{i},0\n" for i in ids))
    add_competition(world.root, "wheelcomp", input_dir / "comp", labels)
    for folder in (wheels, models):
        pushed = world.kernelpack("dataset", "push", str(folder), "--wait")
        assert pushed.returncode == 0, pushed

    config = json.loads((out.parent / "wheel-kernel.yml").read_text())
    config["test"] = {**config["test"], "images": "wheelcomp/test",
                      "sample_submission": "wheelcomp/sample_submission.csv"}
    config["kernel"].update(competition_sources=["wheelcomp"],
                            dataset_sources=[f"{USER}/wheel-models"])
    (tmp_path / "wheel-kernel.yml").write_text(json.dumps(config))
    assert main(["build", str(tmp_path / "wheel-kernel.yml"), "-o", str(tmp_path / "out"),
                 "--code", str(out.parent / "kp_wheel_user.py"), "--wheels", str(wheels)]) == 0
    run = world.kernelpack("kernel", "push", str(tmp_path / "out"), "--wait")
    logs = world.kernelpack("kernel", "logs", f"{USER}/wheel-kernel")
    assert run.returncode == 0, (run, logs)
    assert "wheels: installed 1 from ../input/bottleneck-wheels: bottleneck" in logs.stdout, logs
    assert "user code: bottleneck" in logs.stdout and "kernelpack-wheels-" in logs.stdout, logs
