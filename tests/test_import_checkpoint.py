"""`kernelpack import-checkpoint`: every weights format a competitor ships, imported and checked
against the original model's outputs; bad inputs get one line naming the file and the fix."""

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from inference_core.checkpoint import load_checkpoint, model_from_checkpoint
from inference_core.model_factory import create_model
from inference_core.versions import package_versions
from kernelpack.cli import main
from kernelpack.errors import CheckpointImportError
from kernelpack.weights.import_checkpoint import import_checkpoint

CONFIG = {"input_size": 16, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
          "activation": "softmax", "model_kwargs": {"width": 4}}
CODE = '''
from torch import nn


def tiny(num_classes, hidden=8):
    """Expects 3x8x8 inputs: a wrong input_size fails in the forward pass."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))
'''


@pytest.fixture(scope="module")
def original():
    """small_cnn with random weights and random BatchNorm statistics (buffers must come too)."""
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=3, width=4)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(CONFIG))
    return path


def _lightning(model: nn.Module) -> dict:
    """What Lightning's ModelCheckpoint writes for a LightningModule holding `self.model`."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    optimizer.step()
    optimizer.zero_grad()
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["criterion.pos_weight"] = torch.ones(3)  # a buffer outside the network
    return {"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
            "state_dict": state, "optimizer_states": [optimizer.state_dict()],
            "lr_schedulers": [], "hyper_parameters": {"lr": 1e-3, "arch": "small_cnn"}}


def _write(fmt: str, model: nn.Module, folder):
    """The weights of `model` in format `fmt`; returns the file and the extra CLI flags."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if fmt == "state_dict":
        path = folder / "plain.pth"
        torch.save(state, path)
        return path, []
    if fmt == "lightning":
        path = folder / "epoch=3-step=120.ckpt"
        torch.save(_lightning(create_model("small_cnn", num_classes=3, width=4)), path)
        checkpoint = torch.load(path, weights_only=True)  # swap in the reference weights
        checkpoint["state_dict"].update({f"model.{k}": v for k, v in state.items()})
        torch.save(checkpoint, path)
        return path, ["--strip-prefix", "model."]
    if fmt == "arch_list":
        path = folder / "failover.pth"
        torch.save(["small_cnn", state], path)
        return path, []
    if fmt in ("safetensors", "safetensors_unnamed"):
        path = folder / ("model.safetensors" if fmt == "safetensors" else "weights.bin")
        save_file(state, str(path))
        return path, []
    if fmt == "pickled_module":
        path = folder / "whole.pt"
        torch.save(model, path)
        return path, ["--trust-pickle"]
    raise AssertionError(fmt)


def _cli(source, output, config_file, *extra) -> list[str]:
    return ["import-checkpoint", str(source), "-o", str(output), "--arch", "small_cnn",
            "--num-classes", "3", "--name", "cnn", "--fold", "2", "--config", str(config_file),
            *extra]


@pytest.mark.parametrize("fmt", ["state_dict", "lightning", "arch_list", "safetensors",
                                 "safetensors_unnamed", "pickled_module"])
def test_every_format_imports_to_the_same_outputs(fmt, original, config_file, tmp_path, capsys):
    source, flags = _write(fmt, original, tmp_path)
    output = tmp_path / "out" / "cnn_f2.pt"
    assert main(_cli(source, output, config_file, *flags)) == 0
    printed = capsys.readouterr().out
    assert f"wrote {output}: 'cnn' fold 2 (small_cnn, 3 classes;" in printed
    assert "forward pass on [2, 3, 16, 16] ok" in printed
    if fmt == "lightning":
        assert "left out 1 keys outside --strip-prefix 'model.': criterion.pos_weight" in printed

    raw = torch.load(output, weights_only=True)  # plain types only
    # the versions that built it, as imported in this process (torch, numpy, PIL at least)
    assert raw["config"] == {"name": "cnn", "fold": 2, **CONFIG, "versions": package_versions()}
    assert {"torch", "numpy", "PIL"} <= set(raw["config"]["versions"])
    imported = model_from_checkpoint(load_checkpoint(output), "cnn_f2.pt")
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(imported(x), original(x), rtol=0, atol=1e-6)


def test_user_code_arch_imports_and_its_forward_pass_is_checked(tmp_path):
    package = tmp_path / "code" / "kp_import_nets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(CODE)
    exec(compile(CODE, "tiny", "exec"), namespace := {})
    torch.manual_seed(3)
    reference = namespace["tiny"](num_classes=4, hidden=6).eval()
    source = tmp_path / "tiny.pth"
    torch.save(reference.state_dict(), source)
    config = tmp_path / "tiny.yml"
    config.write_text("input_size: 8\nmodel_kwargs: {hidden: 6}\nactivation: sigmoid\n")
    output = tmp_path / "tiny.pt"
    result = import_checkpoint(source, output, arch="kp_import_nets:tiny", num_classes=4,
                               name="tiny", config_file=config, code=[package])
    assert result.config.activation == "sigmoid" and result.input_shape == (2, 3, 8, 8)
    imported = model_from_checkpoint(load_checkpoint(output), "tiny.pt")
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(imported(x), reference(x), rtol=0, atol=1e-6)

    config.write_text("input_size: 16\nmodel_kwargs: {hidden: 6}\n")
    with pytest.raises(CheckpointImportError) as info:
        import_checkpoint(source, tmp_path / "bad.pt", arch="kp_import_nets:tiny",
                          num_classes=4, name="tiny", config_file=config, code=[package])
    message = str(info.value)
    assert message.startswith(f"{source}: the forward pass on a dummy batch of shape "
                              "[2, 3, 16, 16] fails (")
    assert "check input_size/preprocess in --config" in message and "\n" not in message
    assert not (tmp_path / "bad.pt").exists()


def _error(capsys, argv) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_mismatched_keys_are_listed_with_the_prefix_that_explains_them(original, config_file,
                                                                      tmp_path, capsys):
    source = tmp_path / "dataparallel.pth"
    torch.save({f"module.{k}": v for k, v in original.state_dict().items()}, source)
    err = _error(capsys, _cli(source, tmp_path / "x.pt", config_file))
    count = len(original.state_dict())
    assert f"{source}: weights do not fit arch 'small_cnn' with 3 classes" in err
    assert f"{count} missing: features.0.0.weight, features.0.1.weight, features.0.1.bias, ... " \
           f"{count - 3} more" in err
    assert f"{count} unexpected: module.features.0.0.weight" in err
    assert err.rstrip().endswith("add --strip-prefix module.")
    assert main(_cli(source, tmp_path / "x.pt", config_file, "--strip-prefix", "module.")) == 0

    wrong_head = _cli(tmp_path / "x.pt", tmp_path / "y.pt", config_file)
    wrong_head[wrong_head.index("--num-classes") + 1] = "5"
    err = _error(capsys, wrong_head)
    assert "with 5 classes (2 of another shape: head.weight [3, 16] in the file, [5, 16] in the " \
           "model" in err
    assert "check --arch, --num-classes and model_kwargs in --config" in err
    assert not (tmp_path / "y.pt").exists()


def test_a_pickle_needs_trust_pickle(original, config_file, tmp_path, capsys):
    source, _ = _write("pickled_module", original, tmp_path)
    err = _error(capsys, _cli(source, tmp_path / "x.pt", config_file))
    assert f"{source}: holds pickled Python objects (" in err
    assert "unpickling runs code from the file; add --trust-pickle if the file is trusted" in err
    assert not (tmp_path / "x.pt").exists()


def test_unknown_arch_bad_config_and_unreadable_files(original, config_file, tmp_path, capsys):
    source, _ = _write("state_dict", original, tmp_path)
    argv = _cli(source, tmp_path / "x.pt", config_file)
    argv[argv.index("--arch") + 1] = "small_cn"
    err = _error(capsys, argv)
    assert f"{source}: unknown architecture 'small_cn'" in err

    typo = tmp_path / "typo.yml"
    typo.write_text("input_size: 16\nactivaton: sigmoid\n")
    err = _error(capsys, _cli(source, tmp_path / "x.pt", typo))
    assert f"{typo}: config.activaton: unknown field; did you mean 'activation'?" in err

    silent = tmp_path / "silent.json"
    silent.write_text(json.dumps({"model_kwargs": {"width": 4}}))
    err = _error(capsys, _cli(source, tmp_path / "x.pt", silent))
    assert f"{silent}: says nothing about the model's input; give input_size" in err

    clash = tmp_path / "clash.json"
    clash.write_text(json.dumps({**CONFIG, "name": "other"}))
    err = _error(capsys, _cli(source, tmp_path / "x.pt", clash))
    assert f"{clash}: name 'other' differs from --name 'cnn'; drop one of them" in err

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not weights at all")
    err = _error(capsys, _cli(garbage, tmp_path / "x.pt", config_file))
    assert f"{garbage}: not a torch.save or .safetensors file (" in err
    assert not (tmp_path / "x.pt").exists()


def test_a_timm_safetensors_file_with_timm_preprocessing(tmp_path):
    import timm
    from timm.data import resolve_data_config

    torch.manual_seed(4)
    reference = timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()
    data_config = {k: list(v) if isinstance(v, tuple) else v
                   for k, v in resolve_data_config({}, model=reference).items()}
    source = tmp_path / "model.safetensors"  # what the Hugging Face hub serves for timm models
    save_file(reference.state_dict(), str(source))
    config = tmp_path / "timm.json"
    config.write_text(json.dumps({"preprocess": {"timm": data_config}}))
    result = import_checkpoint(source, tmp_path / "t.pt", arch="timm.test_resnet",
                               num_classes=3, name="t", config_file=config)
    assert result.input_shape == (2, *data_config["input_size"])
    imported = model_from_checkpoint(load_checkpoint(tmp_path / "t.pt"), "t.pt")
    x = torch.randn(2, *data_config["input_size"])
    with torch.no_grad():
        assert torch.allclose(imported(x), reference(x), rtol=0, atol=1e-6)


def test_a_config_key_given_twice_is_an_error_not_the_last_one(original, tmp_path, capsys):
    source, _ = _write("state_dict", original, tmp_path)
    twice_yml = tmp_path / "twice.yml"
    twice_yml.write_text("input_size: 16\nactivation: softmax\ninput_size: 32\n")
    err = _error(capsys, _cli(source, tmp_path / "x.pt", twice_yml))
    assert f"{twice_yml}: line 3: key 'input_size' is given twice (first at line 1)" in err
    twice_json = tmp_path / "twice.json"
    twice_json.write_text('{"input_size": 16, "input_size": 32}')
    err = _error(capsys, _cli(source, tmp_path / "x.pt", twice_json))
    assert f"{twice_json}: key 'input_size' is given twice" in err
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("config, flags, expected", [
    ({}, ["--num-classes", "1000000000"], "num_classes: must be <= 1000000, got 1000000000"),
    ({"input_size": 100000}, [], "config.input_size: must be <= 4096, got 100000"),
    ({"input_size": 32, "model_kwargs": {"width": -3}}, [],
     "cannot build arch 'small_cnn' with model_kwargs {'width': -3} (Trying to create tensor "
     "with negative dimension"),
    ({"input_size": 32, "model_kwargs": {"width": 10 ** 9}}, [],
     "cannot build arch 'small_cnn' with model_kwargs {'width': 1000000000} ("),
])
def test_absurd_sizes_are_one_line_before_any_memory_runs_out(original, tmp_path, capsys,
                                                              config, flags, expected):
    source = tmp_path / "w.pth"
    torch.save(original.state_dict(), source)
    config_path = tmp_path / "sizes.json"
    config_path.write_text(json.dumps(config))
    argv = _cli(source, tmp_path / "x.pt", config_path)
    if flags:
        argv[argv.index("--num-classes") + 1] = flags[1]
    assert expected in _error(capsys, argv)
    assert not (tmp_path / "x.pt").exists()


def test_a_tensor_of_another_kind_than_the_models_is_refused_not_cast(original, config_file,
                                                                     tmp_path, capsys):
    # A safetensors header that says I32 for float weights: load_state_dict would cast silently.
    weights = {key: value.contiguous() for key, value in original.state_dict().items()}
    first = next(key for key, value in weights.items() if value.is_floating_point())
    weights[first] = (weights[first] * 1000).to(torch.int32)
    source = tmp_path / "lying.safetensors"
    save_file(weights, str(source))
    err = _error(capsys, _cli(source, tmp_path / "x.pt", config_file))
    assert f"tensor {first!r} is int32 but the model holds float32 there" in err
    assert not (tmp_path / "x.pt").exists()
    # another float width is an ordinary cast
    halves = {key: value.half() if value.is_floating_point() else value
              for key, value in original.state_dict().items()}
    torch.save(halves, tmp_path / "half.pth")
    assert main(_cli(tmp_path / "half.pth", tmp_path / "h.pt", config_file)) == 0
