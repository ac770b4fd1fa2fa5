"""`build --code` on packages as competitors published them: the kernel gets what the model needs.

The 2019-style packages in tests/code_2019 (used as they are, no wrapper module) hold training
scripts importing absent packages (apex, iterstrat), transforms importing albumentations 0.x names
that 2.x removed, a factory whose parameters are `arch` and `n_classes`, a module file importing
its siblings by plain name and a second `--code` root. The end-to-end test imports the competitor's
checkpoint, builds, runs the kernel offline in the sandbox and compares it with `predict` on the
host; the others check what is bundled, what is left out (one line each) and the errors.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_helpers import empty_dirs, python312, run_offline
from PIL import Image
from sklearn.datasets import load_digits

from inference_core import save_checkpoint
from inference_core.errors import UnknownArchError, UserCodeError
from inference_core.model_factory import create_model, import_user_module
from kernelpack.bundler.bundle import Entry, bundle
from kernelpack.bundler.imports import ImportRef
from kernelpack.bundler.locate import MAX_FILE_BYTES
from kernelpack.bundler.missing_names import missing_names
from kernelpack.bundler.payload import decode_payload, payload_pieces
from kernelpack.cli import main
from kernelpack.errors import BuildError, BundleError
from kernelpack.kernel.build import build_kernel
from kernelpack.kernel.sandbox import run_local
from kernelpack.kernel.user_code import code_locations, import_user_code

CODE = Path(__file__).parent / "code_2019"
IMET, FLAT_NET, LAYERS = CODE / "kp19_imet", CODE / "flat" / "kp19_net.py", CODE / "kp19_layers"
SIZE, CLASSES = 32, 5
# Kaggle runs Python 3.12: the bootstrap's reader of left-out modules runs on both.
INTERPRETERS = [sys.executable] + ([python312()] if python312() else [])
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _ensemble(path: Path, names: list[str]) -> Path:
    path.write_text(json.dumps({
        "models": [{"name": name} for name in names],
        "test": {"images": "comp/test", "sample_submission": "comp/sample_submission.csv"},
        "submission": {"format": "probabilities"}, "blend": "mean", "tta": ["identity"],
        "batch_size": 4, "kernel": {"id": "tester/code-closure"}}))
    return path


def _kernel_files(out: Path) -> dict[str, bytes]:
    return decode_payload(payload_pieces((out / "kernel.py").read_text()))


@pytest.fixture(scope="module")
def competition(tmp_path_factory):
    """input/comp (digits at SIZE, a sample submission) and input/models: the iMet-style
    checkpoint saved the way its training saved it, brought in with import-checkpoint, and the
    flat experiment's model saved as a kernelpack checkpoint."""
    root = tmp_path_factory.mktemp("code-closure")
    test_dir = root / "input" / "comp" / "test"
    test_dir.mkdir(parents=True)
    digits = load_digits()
    ids = []
    for index in range(6):
        gray = (digits.images[index] * 16).clip(0, 255).astype(np.uint8)
        rgb = np.stack([gray, 255 - gray, (gray * 0.6).astype(np.uint8)], axis=-1)
        Image.fromarray(rgb).resize((SIZE, SIZE), Image.BICUBIC).save(test_dir / f"{index}.png")
        ids.append(f"{index}.png")
    with open(root / "input" / "comp" / "sample_submission.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["id"], *[[i] for i in ids]])

    # The host imports the code as the kernel will: the module file first, the helper root after.
    import_user_code([IMET, FLAT_NET, LAYERS])
    from kp19_imet.models import get_model
    from kp19_net import build

    torch.manual_seed(2019)
    imet = get_model("tiny_senet", n_classes=CLASSES)
    flat = build({"width": 8, "classes": CLASSES})
    for model in (imet, flat):
        with torch.no_grad():  # confident, different outputs, so that a wrong model shows
            for parameter in model.parameters():
                parameter.mul_(3.0)
    models = root / "input" / "models"
    raw = root / "run1" / "best-model.pt"
    raw.parent.mkdir()
    torch.save({"model": imet.state_dict(), "epoch": 7, "step": 1400}, raw)
    config = root / "imet-config.json"
    config.write_text(json.dumps({
        "input_size": SIZE, "resize": "stretch", "mean": MEAN, "std": STD,
        "activation": "sigmoid", "classes_argument": "n_classes",
        "model_kwargs": {"arch": "tiny_senet"}}))
    assert main(["import-checkpoint", str(raw), "-o", str(models / "imet.pt"),
                 "--arch", "kp19_imet.models:get_model", "--num-classes", str(CLASSES),
                 "--name", "imet", "--config", str(config), "--code", str(IMET)]) == 0
    save_checkpoint(models / "flat.pt", "kp19_net:build", CLASSES,
                    {"name": "flat", "input_size": SIZE, "resize": "stretch", "mean": MEAN,
                     "std": STD, "activation": "softmax",
                     "model_kwargs": {"config": {"width": 8, "classes": CLASSES}}}, flat.eval())
    return root, ids


@pytest.mark.slow
def test_the_published_package_runs_in_the_kernel_as_predict_runs_it_on_the_host(
        competition, tmp_path, capsys):
    # End to end (a build with --models, a kernel in a fresh interpreter, torch): 10-30 s.
    root, ids = competition
    ensemble = _ensemble(tmp_path / "ens.yml", ["imet", "flat"])
    host = tmp_path / "host.npy"
    assert main(["predict", str(ensemble), "--images", str(root / "input" / "comp" / "test"),
                 "--sample", str(root / "input" / "comp" / "sample_submission.csv"),
                 "--models", str(root / "input" / "models"), "-o", str(host), "--quiet",
                 "--code", str(IMET), "--code", str(FLAT_NET), "--code", str(LAYERS)]) == 0
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["build", str(ensemble), "-o", str(out), "--models",
                 str(root / "input" / "models"), "--code", str(IMET), "--code", str(FLAT_NET),
                 "--code", str(LAYERS)]) == 0
    printed = capsys.readouterr().out
    # The training-only modules stay out, one line each, naming the import that cannot be met.
    assert "left out kp19_imet/main.py (kp19_imet.main): from apex import amp " \
           "(kp19_imet/main.py:15): neither on the Kaggle image nor installed here" in printed
    assert "left out kp19_imet/make_folds.py (kp19_imet.make_folds): from " \
           "iterstrat.ml_stratifiers import MultilabelStratifiedKFold" in printed
    assert "has no IAAAdditiveGaussianNoise, IAAPerspective, JpegCompression" in printed
    files = _kernel_files(out)
    assert {"kp19_imet/__init__.py", "kp19_imet/models.py", "kp19_net.py", "kp19_provider.py",
            "kp19_blocks.py", "kp19_layers/gates.py", "pretrainedmodels/models/senet.py"} \
        <= set(files)
    assert not {"kp19_imet/main.py", "kp19_imet/transforms.py", "kp19_imet/utils.py",
                "kp19_train.py"} & set(files)

    expected = np.load(host)
    # With KERNELPACK_KAGGLE_PYTHON (a Python 3.12 venv with the Kaggle image's packages and
    # torch: several GB, so not in CI), the same kernel runs there too.
    for python in [None, *filter(None, [os.environ.get("KERNELPACK_KAGGLE_PYTHON")])]:
        result = run_local(out, root / "input", python=python)
        assert result.returncode == 0, result.log.read_text()
        with open(result.submission, newline="") as handle:
            rows = list(csv.reader(handle))
        assert [row[0] for row in rows[1:]] == ids
        kernel = np.array([[float(v) for v in row[1:]] for row in rows[1:]])
        assert np.abs(kernel - expected).max() < 1e-6, python
    # Not vacuous: the blend is far from uniform and differs between images.
    assert np.abs(expected - expected.mean()).max() > 0.05
    assert np.abs(expected[0] - expected[1]).max() > 0.01


def test_without_models_every_module_whose_imports_are_met_is_carried(competition, tmp_path,
                                                                       capsys):
    ensemble = _ensemble(tmp_path / "ens.yml", ["imet"])
    out = tmp_path / "out"
    assert main(["build", str(ensemble), "-o", str(out), "--code", str(IMET)]) == 0
    printed = capsys.readouterr()
    files = _kernel_files(out)
    assert {"kp19_imet/models.py", "kp19_imet/utils.py"} <= set(files)
    left = [line for line in printed.out.splitlines() if line.startswith("  left out ")]
    assert [line.split(" (")[0] for line in left] == [
        "  left out kp19_imet/dataset.py", "  left out kp19_imet/main.py",
        "  left out kp19_imet/make_folds.py", "  left out kp19_imet/make_submission.py",
        "  left out kp19_imet/transforms.py"]
    assert not any(name.startswith("kp19_imet/") and name.rsplit("/", 1)[-1] in
                   ("main.py", "dataset.py", "transforms.py", "make_folds.py") for name in files)
    # utils' `import tensorboardX` inside a function: carried, with a warning; apex under
    # try/except ImportError: nothing to say (it is installed nowhere).
    assert "utils.py:45: `from tensorboardX import SummaryWriter` runs only when called" \
        in printed.err


def test_exclude_leaves_out_what_the_user_names(competition, tmp_path, capsys):
    ensemble = _ensemble(tmp_path / "ens.yml", ["imet"])
    out = tmp_path / "out"
    result = build_kernel(ensemble, out, code=[IMET], exclude=["utils.py", "kp19_imet.make_*"])
    assert "kp19_imet/utils.py (kp19_imet.utils): left out with --exclude utils.py" \
        in result.left_out
    assert "kp19_imet/make_submission.py (kp19_imet.make_submission): left out with --exclude " \
           "kp19_imet.make_*" in result.left_out
    assert "kp19_imet/utils.py" not in _kernel_files(out)
    with pytest.raises(BuildError, match=r"--exclude x\.py: there is no code to leave"):
        build_kernel(ensemble, out, exclude=["x.py"])
    # A pattern that matches nothing, or one that takes away a module the kernel imports.
    assert main(["build", str(ensemble), "-o", str(out), "--code", str(IMET),
                 "--exclude", "train_*.py"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--exclude train_*.py: matches no module or file" in err
    assert main(["build", str(ensemble), "-o", str(out), "--code", str(IMET), "--models",
                 str(competition[0] / "input" / "models"), "--exclude", "models.py"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--exclude models.py: leaves out kp19_imet.models, which " \
        "the kernel imports, for checkpoint imet.pt: arch kp19_imet.models:get_model" in err


def test_a_module_the_checkpoint_names_that_cannot_import_in_the_kernel_is_a_build_error(
        competition, tmp_path, capsys):
    models = tmp_path / "models"
    save_checkpoint(models / "folds.pt", "kp19_imet.make_folds:make_folds", CLASSES,
                    {"name": "folds", "input_size": SIZE}, torch.nn.Linear(2, CLASSES))
    ensemble = _ensemble(tmp_path / "ens.yml", ["folds"])
    assert main(["build", str(ensemble), "-o", str(tmp_path / "out"), "--code", str(IMET),
                 "--models", str(models)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "from iterstrat.ml_stratifiers import MultilabelStratifiedKFold " \
           "(kp19_imet/make_folds.py:8): neither on the Kaggle image nor installed here; " \
           "kp19_imet.make_folds is needed in the kernel, for checkpoint folds.pt: arch " \
           "kp19_imet.make_folds:make_folds; install the package here" in err
    # Through a chain: the module named imports one whose albumentations names are gone.
    save_checkpoint(models / "folds.pt", "kp19_imet.dataset:TrainDataset", CLASSES,
                    {"name": "folds", "input_size": SIZE}, torch.nn.Linear(2, CLASSES))
    assert main(["build", str(ensemble), "-o", str(tmp_path / "out"), "--code", str(IMET),
                 "--models", str(models)]) == 1
    err = capsys.readouterr().err
    assert "albumentations 2.0.8 (installed here, standing in for the Kaggle image's) has no " \
           "IAAAdditiveGaussianNoise, IAAPerspective, JpegCompression" in err
    assert "kp19_imet.transforms is needed in the kernel (imported as kp19_imet.dataset -> " \
           "kp19_imet.transforms)" in err
    assert not (tmp_path / "out").exists()


def _write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_imports_that_do_not_run_on_import_are_not_required(tmp_path):
    package = _write(tmp_path / "kpc_soft", {
        "__init__.py": """
            from .net import build
            try:
                import kpc_absent_apex
            except ImportError:
                kpc_absent_apex = None
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                import kpc_absent_types


            def train():
                import kpc_absent_trainer


            if __name__ == "__main__":
                import kpc_absent_cli
        """,
        "net.py": "from . import layers\n\ndef build(num_classes):\n    return layers\n",
        "layers.py": "WIDTH = 3\n",
        "assets/labels.txt": "cat\ndog\n",
    })
    result = bundle(Entry("e.py", b"import kpc_soft\n"), code=code_locations([(package, "x")]))
    assert result.code_modules == ("kpc_soft", "kpc_soft.layers", "kpc_soft.net")
    assert {"kpc_soft/assets/labels.txt", "kpc_soft/net.py"} <= set(result.files)
    assert result.left_out == () and result.missing == ()
    assert [w.split(":")[0:2] for w in result.warnings] == [["kpc_soft/__init__.py", "13"]]


def test_a_module_file_takes_its_siblings_and_a_package_its_relative_imports(tmp_path):
    folder = _write(tmp_path / "exp", {
        "kpc_infer.py": "import kpc_provider\nfrom kpc_pkg.sub import VALUE\n"
                        "from kpc_nets.resnet import build\n",
        "kpc_nets/resnet.py": "def build(num_classes):\n    return num_classes\n",
        "kpc_nets/notes.md": "a namespace package, as artyompal's models/ folder\n",
        "kpc_provider.py": "from kpc_pkg import sub\n",
        "kpc_pkg/__init__.py": "",
        "kpc_pkg/sub/__init__.py": "from ..leaf import VALUE\n",
        "kpc_pkg/leaf.py": "VALUE = 7\n",
        "kpc_pkg/unused.py": "import kpc_absent\n",
        "kpc_other.py": "import kpc_absent\n",
    })
    result = bundle(Entry("e.py", b"import kpc_infer\n"),
                    code=code_locations([(folder / "kpc_infer.py", "x")]))
    assert set(result.code_modules) == {"kpc_infer", "kpc_provider", "kpc_pkg", "kpc_pkg.sub",
                                        "kpc_pkg.leaf", "kpc_nets.resnet"}
    assert "kpc_nets/notes.md" in result.files
    # Siblings come as far as imports reach: nothing else of their folder, and no line for it.
    assert "kpc_other.py" not in result.files and "kpc_pkg/unused.py" not in result.files
    assert result.left_out == ()


def test_a_missing_sibling_of_a_module_file_is_an_error_naming_it(tmp_path):
    folder = _write(tmp_path / "exp", {"kpc_lonely.py": "from .kpc_helpers import f\n"})
    with pytest.raises(BundleError, match=r"from \.kpc_helpers import f \(kpc_lonely\.py:1\): "
                                          r"a relative import outside a package; kpc_lonely is "
                                          r"needed in the kernel, for --code "):
        bundle(Entry("e.py", b""), code=code_locations([(folder / "kpc_lonely.py", "x")]))


@pytest.mark.parametrize("python", INTERPRETERS)
@pytest.mark.parametrize("order", [0, 1])
def test_a_left_out_module_imported_in_the_kernel_says_why(tmp_path, order, python):
    package = _write(tmp_path / "kpc_left", {
        "__init__.py": "",
        "train.py": "import kpc_absent_apex\n",
        "infer.py": "VALUE = 1\n",
    })
    helper = _write(tmp_path / "h" / "kpc_helper", {"__init__.py": "import kpc_left.infer\n"})
    roots = [(package, "a"), (helper, "b")][::1 if order else -1]
    entry = b"import kpc_helper, kpc_left.infer\nprint('ok', kpc_left.infer.VALUE)\n" \
            b"import kpc_left.train\n"
    result = bundle(Entry("main.py", entry), code=code_locations(roots))
    script = tmp_path / "bundle.py"
    script.write_text(result.text)
    work, temp = empty_dirs(tmp_path / "run")
    run = run_offline(script, work, python=python, tmpdir=temp)
    assert run.stdout == "ok 1\n", run.stderr
    assert "ModuleNotFoundError: No module named 'kpc_left.train': kernelpack left it out of " \
           "the bundle (import kpc_absent_apex (kpc_left/train.py:1): neither on the Kaggle " \
           "image nor installed here)" in run.stderr


def test_a_checkpoints_module_is_imported_only_from_the_users_code(tmp_path):
    with pytest.raises(UserCodeError, match="module 'json' is not code you passed with --code"):
        import_user_module("json", "checkpoint x.pt: albumentations class json.Dumper")
    package = _write(tmp_path / "kpc_transforms", {"__init__.py": "", "crops.py": "SIDE = 4\n"})
    import_user_code([package])
    assert import_user_module("kpc_transforms.crops", "checkpoint x.pt").SIDE == 4
    sys.modules.pop("kpc_transforms.crops", None)


def test_a_partial_in_the_users_code_is_an_arch_when_it_wraps_the_users_own_class(
        competition, tmp_path):
    # lopuhin's 2019 models.py: `resnet50 = partial(ResNet, net_cls=M.resnet50)`.
    model = create_model("kp19_imet.models:wide_senet", num_classes=CLASSES)
    assert type(model).__name__ == "TinySENet" and model.last_linear.out_features == CLASSES
    package = _write(tmp_path / "kpc_partials", {
        "__init__.py": "", "nets.py": "from functools import partial\nimport json\n\n"
                                      "dump = partial(json.dumps, indent=2)\n"})
    import_user_code([package])
    with pytest.raises(UnknownArchError, match=r"'dump' is not defined in your own code \(it "
                                               r"comes from 'json'\)"):
        create_model("kpc_partials.nets:dump", num_classes=CLASSES)


@pytest.mark.slow
def test_an_arch_naming_a_left_out_module_fails_in_the_kernel_with_the_reason(tmp_path):
    # A bundle with inference_core and torch, run in a fresh interpreter: a few seconds.
    package = _write(tmp_path / "kpc_arch", {"__init__.py": "",
                                             "train.py": "import kpc_absent\n\ndef build():\n"
                                                         "    pass\n"})
    entry = (b"from inference_core.model_factory import create_model, import_modules\n"
             b"import_modules(['kpc_arch'])\n"
             b"create_model('kpc_arch.train:build', num_classes=2)\n")
    result = bundle(Entry("main.py", entry), vendor=["inference_core"],
                    code=code_locations([(package, "x")]))
    script = tmp_path / "bundle.py"
    script.write_text(result.text)
    work, temp = empty_dirs(tmp_path / "run")
    run = run_offline(script, work, tmpdir=temp)
    assert run.returncode == 1
    assert "UnknownArchError: unknown architecture 'kpc_arch.train:build': importing " \
           "'kpc_arch.train' failed (No module named 'kpc_arch.train': kernelpack left it out " \
           "of the bundle (import kpc_absent (kpc_arch/train.py:1): neither on the Kaggle image " \
           "nor installed here)); fix that import, and build with --models DIR" in run.stderr, \
        run.stderr


@pytest.mark.parametrize("module, names, expected", [
    ("albumentations.pytorch", ("ToTensor", "ToTensorV2"), "has no ToTensor; it was removed"),
    ("albumentations", ("Compose", "HorizontalFlip", "Normalize"), None),
    ("albumentations.imgaug.transforms", ("IAAFliplr",), "has no module albumentations.imgaug"),
    ("torch._six", ("container_abcs",), "has no module torch._six"),
    ("torch", ("nn", "Tensor", "cuda"), None),
    ("torch.utils.data", ("Dataset", "DataLoader"), None),
    ("scipy.stats.mstats", ("gmean",), None),
])
def test_names_2019_code_imports_are_judged_by_the_installed_version(module, names, expected):
    problem = missing_names(ImportRef(module, 1, names=names))
    assert problem == expected if expected is None else expected in problem


def test_files_a_kernel_cannot_use_are_left_out_in_one_line_each_kind(tmp_path):
    package = _write(tmp_path / "kpc_big", {"__init__.py": "", "labels.csv": "id\n1\n",
                                            "01_eda.py": "import kpc_absent\n",
                                            "old-scripts/train.py": "import kpc_absent\n"})
    (package / "folds.npy").write_bytes(b"\0" * (MAX_FILE_BYTES + 1))
    result = bundle(Entry("e.py", b""), code=code_locations([(package, "x")]))
    assert "kpc_big/labels.csv" in result.files and "kpc_big/folds.npy" not in result.files
    assert result.left_out == (
        "kpc_big/01_eda.py, kpc_big/old-scripts/train.py: no import can name them (a file or "
        "folder name that is not a Python identifier)",
        "kpc_big/folds.npy (1.0 MiB): too big to carry inside kernel.py (limit 1 MiB a file); "
        "read them from a Kaggle dataset if the model needs them, or --exclude them")


def test_models_must_be_a_folder_holding_the_configs_checkpoints(competition, tmp_path, capsys):
    ensemble = _ensemble(tmp_path / "ens.yml", ["absent_model"])
    for folder, expected in ((tmp_path / "nowhere", "not a folder"),
                             (competition[0] / "input" / "models",
                              "none of the config's models is there")):
        assert main(["build", str(ensemble), "-o", str(tmp_path / "out"), "--code", str(IMET),
                     "--models", str(folder)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--models {folder}: {expected}" in err, err
