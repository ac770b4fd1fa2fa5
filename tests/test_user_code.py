"""The user's own code in the kernel: `kernelpack build --code PATH` / `kernel.code`.

A real package written here (a custom module with a relative import, a data file read with
importlib.resources, a `register_model` call, a `module:callable` builder) goes into a kernel with
a timm model beside it; the kernel runs offline in the sandbox, and its probabilities are those of
this test's own forward of the same weights.
"""

import csv
import json
import sys
import textwrap

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from sklearn.datasets import load_digits

from inference_core import save_checkpoint
from inference_core.errors import UnknownArchError, UserCodeError
from inference_core.model_factory import create_model, list_models
from kernelpack.cli import main
from kernelpack.kernel.build import build_kernel
from kernelpack.kernel.sandbox import run_local
from kernelpack.kernel.user_code import import_user_code

PACKAGE_NAME = "kp_own_archs"  # unique: this session imports it once, on the host
SIZE = 32
CLASSES = 4
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]

PACKAGE = {
    "__init__.py": """
        '''A competitor's own architectures.'''
        from inference_core import register_model

        from .models import TinyNet


        @register_model("kp_own_tiny")
        def tiny(num_classes, width=6):
            return TinyNet(num_classes, width)
    """,
    "layers.py": """
        from torch import nn


        class ScaledConv(nn.Module):
            def __init__(self, cin, cout, scale):
                super().__init__()
                self.conv = nn.Conv2d(cin, cout, 3, padding=1)
                self.scale = scale

            def forward(self, x):
                return self.conv(x) * self.scale
    """,
    "models.py": """
        import json
        from importlib import resources

        from torch import nn

        from .layers import ScaledConv


        def _scale():
            data = resources.files(__package__) / "data" / "scale.json"
            return json.loads(data.read_text())["scale"]


        class TinyNet(nn.Module):
            def __init__(self, num_classes, width=6):
                super().__init__()
                self.body = ScaledConv(3, width, _scale())
                self.pool = nn.AdaptiveAvgPool2d(1)
                self.head = nn.Linear(width, num_classes)

            def forward(self, x):
                return self.head(self.pool(self.body(x).relu()).flatten(1))


        def build(num_classes, width=6):
            return TinyNet(num_classes, width)
    """,
    "data/scale.json": '{"scale": 3.0}',
}


def write_package(folder, files):
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return folder


@pytest.fixture(scope="session")
def own_package(tmp_path_factory):
    """`src/kp_own_archs`, imported on the host with import_user_code (once per session: its
    `register_model` call may only run once)."""
    package = write_package(tmp_path_factory.mktemp("own") / "src" / PACKAGE_NAME, PACKAGE)
    import_user_code([package])
    return package


def _digits_pngs(folder, count=10):
    """Real digits, written at exactly SIZE x SIZE (tinted, so the channel order matters)."""
    digits = load_digits()
    folder.mkdir(parents=True)
    ids = []
    for index in range(count):
        gray = (digits.images[index] * 16).clip(0, 255).astype(np.uint8)
        rgb = np.stack([gray, (gray * 0.5).astype(np.uint8), 255 - gray], axis=-1)
        Image.fromarray(rgb).resize((SIZE, SIZE), Image.BICUBIC).save(folder / f"d{index}.png")
        ids.append(f"d{index}.png")
    return ids


def _checkpoint_config(name):
    return {"name": name, "input_size": SIZE, "resize": "stretch", "mean": MEAN, "std": STD,
            "activation": "softmax"}


def _three_models(own_package, models_dir):
    """The user's callable, the user's registered name and a timm model, saved as checkpoints."""
    from kp_own_archs.models import TinyNet, build

    torch.manual_seed(7)
    made = {"callable": (f"{PACKAGE_NAME}.models:build", build(CLASSES, width=5), {"width": 5}),
            "registered": ("kp_own_tiny", TinyNet(CLASSES), {}),
            "timm": ("timm.test_resnet",
                     timm.create_model("test_resnet", pretrained=False, num_classes=CLASSES), {})}
    for name, (arch, model, kwargs) in made.items():
        with torch.no_grad():  # confident outputs, so that a wrong model shows
            for parameter in model.parameters():
                if parameter.ndim == 2:
                    parameter.mul_(6.0)
        save_checkpoint(models_dir / f"{name}.pt", arch, CLASSES,
                        {**_checkpoint_config(name), "model_kwargs": kwargs}, model.eval())
    return {name: model for name, (_, model, _) in made.items()}


def _reference_probs(models, paths):
    """Plain PIL and torch: RGB, /255, normalise, each model's softmax, the mean over models."""
    batch = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0
                      for p in paths])
    batch = (batch - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()
    with torch.inference_mode():
        per_model = [model.eval()(x).softmax(1).double().numpy() for model in models.values()]
    return per_model


def _ensemble_yml(path, names, code=None):
    kernel = {"id": "tester/own-archs"}
    if code is not None:
        kernel["code"] = code
    path.write_text(json.dumps({
        "models": [{"name": name} for name in names],
        "test": {"images": "comp/test", "sample_submission": "comp/sample_submission.csv"},
        "submission": {"format": "probabilities"},
        "blend": "mean",
        "tta": ["identity"],
        "batch_size": 4,
        "kernel": kernel,
    }))
    return path


@pytest.fixture(scope="session")
def own_input(own_package, tmp_path_factory):
    """`input/` like /kaggle/input: `comp/` (test images, sample submission), `own-models/`."""
    root = tmp_path_factory.mktemp("own-input")
    ids = _digits_pngs(root / "comp" / "test")
    with open(root / "comp" / "sample_submission.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["id"]] + [[i] for i in ids])
    models = _three_models(own_package, root / "own-models")
    return root, ids, models


def _one_kernel_error(result):
    log = result.log.read_text()
    errors = [line for line in log.splitlines() if line.startswith("kernel error:")]
    assert result.returncode == 1 and len(errors) == 1 and "Traceback" not in log, log
    return errors[0]


@pytest.mark.slow
def test_kernel_runs_the_users_own_archs_offline_as_this_test_computes_them(
        own_package, own_input, tmp_path, monkeypatch):
    # End to end, so 10-30 s: a build, and a kernel started in a fresh `python -I` (torch, timm).
    input_dir, ids, models = own_input
    monkeypatch.chdir(own_package.parent.parent)  # --code is relative to the current folder
    config = _ensemble_yml(tmp_path / "own.yml", list(models))
    out = tmp_path / "out"
    assert main(["build", str(config), "-o", str(out), "--code", f"src/{PACKAGE_NAME}"]) == 0
    result = run_local(out, input_dir)
    assert result.returncode == 0, result.log.read_text()

    with open(result.submission, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["id"] + [str(c) for c in range(CLASSES)]
    assert [row[0] for row in rows[1:]] == ids
    kernel = np.array([[float(v) for v in row[1:]] for row in rows[1:]])

    per_model = _reference_probs(models, [input_dir / "comp" / "test" / i for i in ids])
    expected = np.mean(per_model, axis=0)
    assert np.abs(kernel - expected).max() < 1e-5
    # Not vacuous: the three models disagree, and each is far from uniform.
    assert min(np.abs(a - b).max() for i, a in enumerate(per_model) for b in per_model[i + 1:]) \
        > 0.05
    assert all(np.abs(p - 1 / CLASSES).max() > 0.1 for p in per_model)


def test_host_import_registers_the_users_names_and_builds_their_callable(own_package):
    assert "kp_own_tiny" in list_models("kp_own_*")
    model = create_model(f"{PACKAGE_NAME}.models:build", num_classes=3, width=2)
    assert type(model).__name__ == "TinyNet" and model.body.scale == 3.0  # the data file
    assert model(torch.zeros(1, 3, 8, 12)).shape == (1, 3)
    with pytest.raises(UnknownArchError) as info:
        create_model(f"{PACKAGE_NAME}.models:biuld", num_classes=3)
    assert str(info.value) == (
        f"unknown architecture '{PACKAGE_NAME}.models:biuld': module '{PACKAGE_NAME}.models' has "
        "no callable 'biuld'; close names: build")


@pytest.mark.slow
def test_a_module_not_given_with_code_is_one_kernel_error_naming_the_fix(own_input, tmp_path):
    input_dir, _, _ = own_input
    out = tmp_path / "out"
    build_kernel(_ensemble_yml(tmp_path / "own.yml", ["callable"]), out)  # no --code
    line = _one_kernel_error(run_local(out, input_dir))
    assert f"unknown architecture '{PACKAGE_NAME}.models:build'" in line
    assert f"module '{PACKAGE_NAME}.models' not found; add --code PATH" in line


@pytest.mark.slow
def test_user_code_that_fails_to_import_is_one_kernel_error(own_input, tmp_path):
    input_dir, _, _ = own_input
    broken = write_package(tmp_path / "kp_broken_archs", {
        "__init__.py": "raise ValueError('no weights folder configured')\n"})
    out = tmp_path / "out"
    build_kernel(_ensemble_yml(tmp_path / "own.yml", ["timm"]), out, code=[broken])
    line = _one_kernel_error(run_local(out, input_dir))
    assert line == ("kernel error: user code: importing 'kp_broken_archs' failed (ValueError: "
                    "no weights folder configured); fix that module")
    with pytest.raises(UserCodeError, match="user code: importing 'kp_broken_archs' failed"):
        import_user_code([broken])
    sys.modules.pop("kp_broken_archs", None)


def test_kernel_code_is_relative_to_the_config_file(own_package, tmp_path, monkeypatch):
    config = _ensemble_yml(own_package.parent.parent / "rel.yml", ["timm"],
                           code=[f"src/{PACKAGE_NAME}"])
    monkeypatch.chdir(tmp_path)
    assert build_kernel(config, tmp_path / "out").size_bytes > 0
    bad = _ensemble_yml(own_package.parent.parent / "bad.yml", ["timm"], code=["src/absent"])
    with pytest.raises(UserCodeError) as info:
        build_kernel(bad, tmp_path / "out")
    assert str(info.value).startswith(f"{bad}: kernel.code[0] 'src/absent': not found")


NAMESPACE_NAME = "kp_ns_archs"
# A training repository's folder with no __init__.py (a PEP 420 namespace package): an absolute
# import of a sibling, a relative import from a sub-folder that has no __init__.py either.
NAMESPACE_PACKAGE = {
    "nets.py": f"""
        from torch import nn

        from {NAMESPACE_NAME}.blocks.conv import conv_block


        def build(num_classes):
            return nn.Sequential(conv_block(3, 4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(4, num_classes))
    """,
    "blocks/conv.py": """
        from torch import nn

        from .scale import SCALE


        def conv_block(cin, cout):
            conv = nn.Conv2d(cin, cout, 3, padding=1)
            return nn.Sequential(conv, nn.Hardtanh(-SCALE, SCALE))
    """,
    "blocks/scale.py": "SCALE = 0.75\n",
}


@pytest.mark.slow
def test_a_folder_without_init_py_is_carried_as_a_namespace_package(tmp_path):
    package = write_package(tmp_path / "repo" / NAMESPACE_NAME, NAMESPACE_PACKAGE)
    root = tmp_path / "input"
    ids = _digits_pngs(root / "comp" / "test", count=4)
    with open(root / "comp" / "sample_submission.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["id"]] + [[i] for i in ids])
    import_user_code([package])
    import_user_code([package])        # imported already, from this very folder: no error
    model = create_model(f"{NAMESPACE_NAME}.nets:build", num_classes=CLASSES)
    with torch.no_grad():
        model[-1].weight.mul_(8.0)
    save_checkpoint(root / "ns-models" / "ns.pt", f"{NAMESPACE_NAME}.nets:build", CLASSES,
                    _checkpoint_config("ns"), model.eval())
    out = tmp_path / "out"
    build_kernel(_ensemble_yml(tmp_path / "ns.yml", ["ns"]), out, code=[package])
    result = run_local(out, root)
    assert result.returncode == 0, result.log.read_text()
    with open(result.submission, newline="") as handle:
        kernel = np.array([[float(v) for v in row[1:]] for row in list(csv.reader(handle))[1:]])
    [expected] = _reference_probs({"ns": model}, [root / "comp" / "test" / i for i in ids])
    assert np.abs(kernel - expected).max() < 1e-5 and np.abs(expected - 0.25).max() > 0.02
    # Another folder of that name is not this one: refused, naming where the loaded one lies.
    other = write_package(tmp_path / "elsewhere" / NAMESPACE_NAME, {"x.py": ""})
    with pytest.raises(UserCodeError, match=rf"another module named '{NAMESPACE_NAME}' is "
                                            rf"already imported \(from {package}\)"):
        import_user_code([other])


@pytest.mark.parametrize("files, code, expected", [
    ({}, "absent", "--code absent: not found"),
    ({"empty/notes.txt": ""}, "empty", "--code empty: the folder holds no .py file"),
    ({"notes.txt": ""}, "notes.txt", "--code notes.txt: not a Python module"),
    ({"json/__init__.py": ""}, "json", "--code json: named 'json' like a module of the standard"),
    ({"torch/__init__.py": ""}, "torch", "--code torch: named 'torch' like a module of the "
                                         "Kaggle image, which it would replace in the kernel"),
    ({"six/__init__.py": ""}, "six", "--code six: another module named 'six' is "),
    ({"kp_needs_more/__init__.py": "import kp_not_installed_anywhere\n"}, "kp_needs_more",
     "import kp_not_installed_anywhere (kp_needs_more/__init__.py:1): neither on the Kaggle "
     "image nor installed here"),
])
def test_bad_code_paths_are_one_line_from_the_cli(own_input, tmp_path, monkeypatch, capsys,
                                                   files, code, expected):
    write_package(tmp_path, files)
    config = _ensemble_yml(tmp_path / "own.yml", ["timm"])
    monkeypatch.chdir(tmp_path)
    assert main(["build", str(config), "-o", str(tmp_path / "out"), "--code", code]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "out").exists()


def test_two_code_paths_with_one_name_are_refused(tmp_path):
    first = write_package(tmp_path / "a" / "kp_same", {"__init__.py": ""})
    second = write_package(tmp_path / "b" / "kp_same", {"__init__.py": ""})
    config = _ensemble_yml(tmp_path / "own.yml", ["timm"])
    with pytest.raises(UserCodeError, match=r"named 'kp_same' like .*rename one"):
        build_kernel(config, tmp_path / "out", code=[first, second])


@pytest.mark.parametrize("name", ["numpy", "six"])
def test_host_commands_refuse_code_named_like_an_installed_package_before_importing_it(
        tmp_path, name):
    package = write_package(tmp_path / name, {"__init__.py": "raise SystemExit('imported')\n"})
    with pytest.raises(UserCodeError, match=rf"--code {package}: (named '{name}' like a module of "
                                            rf"the Kaggle image|another module named '{name}' is "
                                            r"(already imported|installed at) .*rename your)"):
        import_user_code([package])
    assert str(tmp_path) not in sys.path


@pytest.mark.parametrize("order", ["main_first", "helper_first"])
def test_code_roots_import_in_any_order(tmp_path, order):
    main = write_package(tmp_path / "a" / f"kp_order_main_{order}",
                         {"__init__.py": f"from kp_order_helper_{order} import WIDTH\n"})
    helper = write_package(tmp_path / "b" / f"kp_order_helper_{order}",
                           {"__init__.py": "WIDTH = 3\n"})
    import_user_code([main, helper] if order == "main_first" else [helper, main])
    assert sys.modules[f"kp_order_main_{order}"].WIDTH == 3
