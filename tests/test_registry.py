import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from inference_core.errors import CheckpointError, UnknownArchError
from inference_core.model_factory import create_model, import_modules, list_models
from inference_core.registry import register_model
from kernelpack.cli import main as cli_main


@pytest.mark.parametrize("arch, size", [
    ("small_cnn", 32),
    ("torchvision.resnet18", 64),
    ("resnet18", 64),  # pretrainedmodels' wrapper ignores num_classes: the head must be replaced
    ("se_resnext50_32x4d", 224),  # fixed 7x7 average pool
    ("bninception", 224),
])
def test_architectures_build_offline_with_the_requested_head(arch, size):
    model = create_model(arch, num_classes=7).eval()
    with torch.inference_mode():
        out = model(torch.zeros(2, 3, size, size))
    assert out.shape == (2, 7)


def test_list_models_filters_by_wildcard():
    assert "se_resnext50_32x4d" in list_models("*resnext*")
    assert all(name.startswith("torchvision.") for name in list_models("torchvision.*"))
    assert list_models() == sorted(list_models())
    assert "small_cnn" in list_models()


def test_unknown_arch_names_close_matches_and_the_fix():
    with pytest.raises(UnknownArchError) as info:
        create_model("se_resnext50", num_classes=3)
    message = str(info.value)
    assert "unknown architecture 'se_resnext50'" in message
    assert "se_resnext50_32x4d" in message
    assert "@register_model" in message and "timm.<name>" in message and "--code" in message
    assert "\n" not in message


def test_register_model_adds_a_custom_builder_once():
    @register_model("test_only_linear")
    def build(num_classes):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))

    assert "test_only_linear" in list_models("test_only_*")
    assert create_model("test_only_linear", num_classes=4)(torch.zeros(1, 3, 4, 4)).shape == (1, 4)
    with pytest.raises(ValueError, match="registered twice"):
        register_model("test_only_linear")(build)


def test_importing_the_registry_imports_no_timm():
    code = "import sys, inference_core.registry; print('timm' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_timm_arch_is_timms_model_with_the_requested_head():
    import timm

    torch.manual_seed(0)
    model = create_model("timm.test_resnet", num_classes=5).eval()
    reference = timm.create_model("test_resnet", pretrained=False, num_classes=5).eval()
    reference.load_state_dict(model.state_dict(), strict=True)  # same keys and shapes
    x = torch.randn(1, 3, 48, 64)
    with torch.inference_mode():
        assert torch.equal(model(x), reference(x))
    assert model(x).shape == (1, 5)
    small = create_model("timm.test_resnet", num_classes=5, drop_rate=0.5)
    assert small.drop_rate == 0.5  # model_kwargs reach timm.create_model


def test_timm_names_are_listed_and_an_unknown_one_names_close_ones():
    names = list_models("timm.test_res*")
    assert names == ["timm.test_resnet"]
    assert len(list_models("timm.*")) > 500 and "timm.resnet18" in list_models("timm.*")
    assert not any(name.startswith("timm.") for name in list_models())
    with pytest.raises(UnknownArchError) as info:
        create_model("timm.resnet181", num_classes=3)
    message = str(info.value)
    assert message.startswith("unknown architecture 'timm.resnet181'")
    assert "timm.resnet18" in message and "\n" not in message


def test_weight_loading_kwargs_are_refused():
    with pytest.raises(UnknownArchError, match="model_kwargs 'pretrained' would load other"):
        create_model("timm.test_resnet", num_classes=3, pretrained=True)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module of the user's, `kp_user_archs`, importable for this test only."""
    (tmp_path / "kp_user_archs.py").write_text(textwrap.dedent("""
        from torch import nn


        class Head(nn.Module):
            def __init__(self, num_classes, width=4):
                super().__init__()
                self.pool = nn.AdaptiveAvgPool2d(1)
                self.fc = nn.Linear(3, num_classes)
                self.width = width

            def forward(self, x):
                return self.fc(self.pool(x).flatten(1))


        def build(num_classes, width=4):
            return Head(num_classes, width)


        def not_a_model(num_classes):
            return "a string"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import_modules(["kp_user_archs"])  # what --code does
    yield "kp_user_archs"
    sys.modules.pop("kp_user_archs", None)


def test_import_string_calls_the_users_callable_with_the_head_and_kwargs(user_module):
    model = create_model(f"{user_module}:build", num_classes=6, width=9)
    assert type(model).__name__ == "Head" and model.width == 9
    assert model(torch.zeros(2, 3, 5, 7)).shape == (2, 6)
    assert type(create_model(f"{user_module}:Head", num_classes=2)).__name__ == "Head"


@pytest.mark.parametrize("arch, expected", [
    ("kp_user_archs:biuld",
     "unknown architecture 'kp_user_archs:biuld': module 'kp_user_archs' has no callable "
     "'biuld'; close names: build"),
    ("kp_absent_pkg.models:build",
     "unknown architecture 'kp_absent_pkg.models:build': module 'kp_absent_pkg.models' not "
     "found; add --code PATH, the folder of package 'kp_absent_pkg'"),
    ("kp_user_archs:not_a_model",
     "architecture 'kp_user_archs:not_a_model': not_a_model(num_classes=...) returned str, not a "
     "torch.nn.Module"),
    ("kp_user_archs:", "unknown architecture 'kp_user_archs:': not a valid import string"),
])
def test_a_bad_import_string_is_one_line_naming_the_arch_and_the_fix(user_module, arch,
                                                                       expected):
    with pytest.raises(UnknownArchError) as info:
        create_model(arch, num_classes=3)
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("arch, expected", [
    # importable, but not the user's: refused before anything is imported or called
    ("logging:basicConfig", "architecture 'logging:basicConfig': module 'logging' is not code "
                            "you passed with --code"),
    ("torch.hub:load", "architecture 'torch.hub:load': module 'torch.hub' is not code you "
                       "passed with --code"),
    ("prototype:torch.hub:load", "architecture 'torch.hub:load': module 'torch.hub' is not "
                                 "code you passed with --code"),
    # the user's module, but a callable it only imported from elsewhere
    ("kp_user_archs:nn.Linear", "architecture 'kp_user_archs:nn.Linear': 'nn.Linear' is not "
                                "defined in your own code (it comes from "
                                "'torch.nn.modules.linear')"),
])
def test_an_arch_calls_only_the_users_own_code(user_module, tmp_path, arch, expected):
    target = tmp_path / "truncated.log"
    target.write_text("kept")
    with pytest.raises(UnknownArchError) as info:
        create_model(arch, num_classes=3, filename=str(target), filemode="w",
                     embedding_dim=4) if arch.startswith("prototype:") else \
            create_model(arch, num_classes=3, filename=str(target), filemode="w")
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)
    assert target.read_text() == "kept"


def test_a_checkpoint_naming_other_code_is_refused_by_name(tmp_path):
    from inference_core.checkpoint import load_checkpoint, model_from_checkpoint

    path = tmp_path / "evil.pt"
    torch.save({"arch": "torch.hub:load", "num_classes": 2, "state_dict": {},
                "config": {"model_kwargs": {"repo_or_dir": str(tmp_path), "model": "x",
                                            "source": "local"}}}, path)
    (tmp_path / "hubconf.py").write_text("open(__file__ + '.ran', 'w').close()\nx = None\n")
    with pytest.raises(Exception) as info:
        model_from_checkpoint(load_checkpoint(path), "evil.pt")
    assert str(info.value).startswith("evil.pt: ") and "not code you passed with --code" in \
        str(info.value)
    assert not (tmp_path / "hubconf.py.ran").exists()


@pytest.mark.parametrize("code", ["0", "None", "'done'"])
def test_user_code_that_exits_at_import_is_an_error_not_a_silent_exit(tmp_path, monkeypatch,
                                                                       code):
    from inference_core.errors import UserCodeError

    (tmp_path / "kp_exits_at_import.py").write_text(f"import sys\nsys.exit({code})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserCodeError) as info:
        import_modules(["kp_exits_at_import"])
    assert str(info.value).startswith(f"user code: importing 'kp_exits_at_import' called "
                                      f"sys.exit({eval(code)!r})")
    sys.modules.pop("kp_exits_at_import", None)


FACTORIES_2019 = """
    from torch import nn


    def by_n_classes(n_classes, arch="resnet", dropout=0.0):
        # a factory of its own: its class count has another name, and it takes an `arch` too
        net = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(3 * 4 * 4, n_classes))
        net.arch = arch
        return net


    def from_config(config):
        # takes no class count at all: it is inside the config it is given
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, config["classes"]))
"""


@pytest.fixture
def factories_2019(tmp_path, monkeypatch):
    (tmp_path / "kp_factories_2019.py").write_text(textwrap.dedent(FACTORIES_2019))
    monkeypatch.syspath_prepend(str(tmp_path))
    import_modules(["kp_factories_2019"])
    yield "kp_factories_2019"
    sys.modules.pop("kp_factories_2019", None)


def test_a_factory_gets_its_own_kwargs_whatever_their_names_and_the_count_by_its_own_name(
        factories_2019):
    from inference_core.model_factory import build_arch

    net = build_arch(f"{factories_2019}:by_n_classes", 7, {"arch": "se_resnext50"}, "n_classes")
    assert net.arch == "se_resnext50" and net[2].out_features == 7
    net = create_model(f"{factories_2019}:by_n_classes", num_classes=7, arch="bninception",
                       n_classes=5)  # a count given among the kwargs is kept as given
    assert net.arch == "bninception" and net[2].out_features == 5
    net = create_model(f"{factories_2019}:from_config", num_classes=3, config={"classes": 3})
    assert net[1].out_features == 3  # no count passed to a factory that takes none
    with pytest.raises(UnknownArchError) as info:
        build_arch(f"{factories_2019}:by_n_classes", 7, {}, "num_labels")
    assert str(info.value) == (
        f"architecture '{factories_2019}:by_n_classes': classes_argument 'num_labels': "
        "by_n_classes takes no such parameter (it takes n_classes, arch, dropout); fix "
        "classes_argument in the checkpoint config")


def test_a_checkpoint_names_its_factorys_class_count_parameter(factories_2019, tmp_path):
    from inference_core.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from inference_core.model_factory import build_arch

    model = build_arch(f"{factories_2019}:by_n_classes", 4, {"arch": "x"}, "n_classes")
    path = save_checkpoint(tmp_path / "m.pt", f"{factories_2019}:by_n_classes", 4,
                           {"model_kwargs": {"arch": "x"}, "classes_argument": "n_classes"},
                           model)
    loaded = model_from_checkpoint(load_checkpoint(path), "m.pt")
    assert loaded.arch == "x" and loaded[2].out_features == 4
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_factory_whose_class_count_has_another_name_gets_a_hint_naming_it(factories_2019,
                                                                           tmp_path):
    # Without classes_argument, by_n_classes gets no count: its required n_classes is missing.
    from inference_core.checkpoint import build_model
    from inference_core.model_config import ModelConfig
    from inference_core.model_factory import withheld_class_count

    arch = f"{factories_2019}:by_n_classes"
    assert withheld_class_count(arch, None) == ["n_classes"]
    assert withheld_class_count(arch, "n_classes") == []  # named: nothing withheld
    assert withheld_class_count(f"{factories_2019}:from_config", None) == []  # no such name
    config = ModelConfig.from_checkpoint({"arch": arch, "num_classes": 4, "config": {
        "input_size": 4, "model_kwargs": {"arch": "x"}}}, "m.pt")
    with pytest.raises(CheckpointError) as info:
        build_model(config, "m.pt")
    assert str(info.value).endswith(
        'set "classes_argument": "n_classes" in the checkpoint config (the factory takes no '
        "num_classes)")


def test_import_checkpoint_says_which_parameter_kept_its_default_class_count(tmp_path, capsys):
    # A factory whose count has a default (as the published 2019 iMet get_seresnet_model's
    # n_classes=1103): built without it, its head has the default width, not --num-classes.
    package = tmp_path / "kp_default_count"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(textwrap.dedent("""
        from torch import nn


        def get_model(arch="small", n_classes=1103):
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, n_classes))
    """))
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 5))
    torch.save(["small", net.state_dict()], tmp_path / "failover.pth")  # [arch, state_dict]
    (tmp_path / "c.json").write_text(json.dumps({"input_size": 16}))
    argv = ["import-checkpoint", str(tmp_path / "failover.pth"), "-o", str(tmp_path / "m.pt"),
            "--arch", "kp_default_count.models:get_model", "--num-classes", "5", "--name", "m",
            "--config", str(tmp_path / "c.json"), "--code", str(package)]
    try:
        assert cli_main(argv) == 1
        assert capsys.readouterr().err.rstrip().endswith(
            "get_model takes no num_classes, so the count went to none of its parameters and "
            'n_classes kept its default: set "classes_argument": "n_classes" in --config')
        (tmp_path / "c.json").write_text(json.dumps({"input_size": 16,
                                                     "classes_argument": "n_classes"}))
        assert cli_main(argv) == 0
    finally:
        for name in [n for n in sys.modules if n.startswith("kp_default_count")]:
            sys.modules.pop(name)


def test_a_factory_that_downloads_pretrained_weights_when_built_is_told_to_turn_it_off(
        tmp_path, monkeypatch):
    # As 2019 factories did (pretrained=True by default, weights fetched when built): here
    # from a port nothing listens on, as on a kernel with no network.
    (tmp_path / "kp_downloads.py").write_text(textwrap.dedent("""
        import urllib.request
        from torch import nn


        def get_model(num_classes, pretrained=True):
            if pretrained:
                urllib.request.urlopen("http://127.0.0.1:9/weights.pth", timeout=5)
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, num_classes))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import_modules(["kp_downloads"])
    from inference_core.checkpoint import build_model
    from inference_core.model_config import ModelConfig

    def config(kwargs):
        return ModelConfig.from_checkpoint({"arch": "kp_downloads:get_model", "num_classes": 3,
                                            "config": {"input_size": 4, "model_kwargs": kwargs}},
                                           "m.pt")

    try:
        with pytest.raises(CheckpointError) as info:
            build_model(config({}), "m.pt")
        message = str(info.value)
        assert message.startswith("m.pt: building arch 'kp_downloads:get_model' with "
                                  "model_kwargs {} read the network or a file (")
        assert 'turn that off in model_kwargs (e.g. "pretrained": false)' in message
        assert build_model(config({"pretrained": False}), "m.pt")[1].out_features == 3
    finally:
        sys.modules.pop("kp_downloads", None)
