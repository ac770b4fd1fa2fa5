import pytest
import torch

from inference_core.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from inference_core.errors import CheckpointError, UnknownArchError
from inference_core.model_config import ModelConfig
from inference_core.model_factory import create_model
from inference_core.preprocess import Preprocess

CONFIG = {"name": "cnn_f0", "fold": 0, "input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3,
          "model_kwargs": {"width": 8}}


def _model():
    torch.manual_seed(0)
    return create_model("small_cnn", num_classes=5, width=8).eval()


def test_round_trip_gives_the_same_predictions_and_loads_with_weights_only(tmp_path):
    model = _model()
    path = save_checkpoint(tmp_path / "m.pt", "small_cnn", 5, CONFIG, model)
    raw = torch.load(path, weights_only=True)
    assert sorted(raw) == ["arch", "config", "num_classes", "state_dict"]
    assert raw["config"] == CONFIG
    restored = model_from_checkpoint(load_checkpoint(path))
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(restored(x), model(x))


def test_a_pickled_model_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save({"model": _model()}, path)
    with pytest.raises(CheckpointError, match=r"whole_model.pt: cannot load with weights_only=True"
                                              r".*not a pickled model"):
        load_checkpoint(path)


def test_config_values_that_need_pickle_are_refused_at_save(tmp_path):
    with pytest.raises(CheckpointError, match=r"m\.pt: config\.mean: must be a list, got tensor"):
        save_checkpoint(tmp_path / "m.pt", "small_cnn", 5, {**CONFIG, "mean": torch.ones(3)},
                        _model())
    with pytest.raises(CheckpointError, match=r"m\.pt: config\.model_kwargs\.width: Tensor is "
                                              r"not a plain type"):
        save_checkpoint(tmp_path / "m.pt", "small_cnn", 5,
                        {**CONFIG, "model_kwargs": {"width": torch.tensor(8)}}, _model())
    assert not (tmp_path / "m.pt").exists()


def _one_line_error(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("config, expected", [
    ({"activaton": "sigmoid"}, "config.activaton: unknown field; did you mean 'activation'?"),
    ({"fold": -1}, "config.fold: must be >= 0, got -1"),
    ({"fold": "0"}, "config.fold: must be an integer, got '0'"),
    ({"activation": "sofmax"}, "config.activation: must be one of softmax, sigmoid, none"),
    ({"classes": ["a", "b"]}, "config.classes: holds 2 labels but the model has 5 outputs"),
    ({"classes": ["a", "a", "b", "c", "d"]}, "config.classes: labels must be unique"),
    ({"std": [0.2, "0.2", 0.2]}, "config.std[1]: must be a number, got '0.2'"),
    ({"input_size": 0}, "config.input_size: must be >= 1, got 0"),
    ({"preprocess": ["resize"]}, "config.preprocess: must be a mapping"),
])
def test_bad_config_fields_are_named_in_one_line(config, expected):
    with pytest.raises(CheckpointError) as info:
        ModelConfig.from_checkpoint({"arch": "small_cnn", "num_classes": 5, "config": config},
                                    "models/m.pt")
    assert _one_line_error(info).startswith(f"models/m.pt: {expected}")


def test_bad_top_level_fields_are_named():
    with pytest.raises(CheckpointError, match=r"m\.pt: num_classes: must be >= 1, got 0"):
        ModelConfig.from_checkpoint({"arch": "small_cnn", "num_classes": 0, "config": {}}, "m.pt")
    with pytest.raises(CheckpointError, match=r"m\.pt: config: missing"):
        ModelConfig.from_checkpoint({"arch": "small_cnn", "num_classes": 2}, "m.pt")


def test_model_config_reads_typed_fields_and_writes_back_the_plain_dict(tmp_path):
    full = {**CONFIG, "resize": "keep_aspect", "activation": "sigmoid",
            "classes": ["a", "b", "c", "d", "e"], "preprocess": {"crop_pct": 0.875}}
    path = save_checkpoint(tmp_path / "m.pt", "small_cnn", 5, full, _model())
    raw = torch.load(path, weights_only=True)
    config = ModelConfig.from_checkpoint(raw, "m.pt")
    assert (config.name, config.fold, config.arch, config.num_classes) == ("cnn_f0", 0,
                                                                            "small_cnn", 5)
    assert config.mean == (0.5, 0.5, 0.5) and config.classes == ("a", "b", "c", "d", "e")
    assert config.model_kwargs == {"width": 8} and config.activation == "sigmoid"
    assert raw["config"] == full == config.to_dict()
    bare = ModelConfig.from_checkpoint({"arch": "small_cnn", "num_classes": 5, "config": {}}, "x")
    assert bare.to_dict() == {} and bare.name is None and bare.model_kwargs == {}


def test_not_a_kernelpack_checkpoint_and_missing_file(tmp_path):
    bare = tmp_path / "bare.pt"
    torch.save(_model().state_dict(), bare)
    with pytest.raises(CheckpointError, match=r"bare\.pt: not a kernelpack checkpoint"):
        load_checkpoint(bare)
    with pytest.raises(CheckpointError, match=r"nope\.pt: checkpoint file not found"):
        load_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pt: cannot load"):
        load_checkpoint(garbage)


def test_weights_that_do_not_fit_the_arch_and_unknown_arch(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", "small_cnn", 5, CONFIG, _model())
    checkpoint = load_checkpoint(path)
    with pytest.raises(CheckpointError, match="weights do not fit arch 'small_cnn' with 6 classes"):
        model_from_checkpoint({**checkpoint, "num_classes": 6}, "m.pt")
    with pytest.raises(CheckpointError) as info:
        model_from_checkpoint({**checkpoint, "num_classes": 6}, "m.pt")
    assert "2 of another shape: head.weight [5, 32] in the file, [6, 32] in the model" in str(
        info.value)
    with pytest.raises(UnknownArchError, match=r"^m\.pt: unknown architecture 'small_cn'"):
        model_from_checkpoint({**checkpoint, "arch": "small_cn"}, "m.pt")
    no_width = {**checkpoint, "config": {**checkpoint["config"], "model_kwargs": {"wdth": 8}}}
    with pytest.raises(CheckpointError, match=r"^m\.pt: cannot build arch 'small_cnn' with "
                                              r"model_kwargs \{'wdth': 8\}"):
        model_from_checkpoint(no_width, "m.pt")
    renamed = {**checkpoint, "state_dict": {f"model.{k}": v
                                            for k, v in checkpoint["state_dict"].items()}}
    with pytest.raises(CheckpointError) as info:
        model_from_checkpoint(renamed, "m.pt")
    message = _one_line_error(info)
    assert "missing: " in message and "unexpected: model." in message and "more" in message


def test_the_preprocessing_fields_are_checked_together_at_save(tmp_path):
    with pytest.raises(CheckpointError, match=r"m\.pt: unknown preprocess key 'crop'; did you mean "
                                              r"'crop_pct'\?"):
        save_checkpoint(tmp_path / "m.pt", "small_cnn", 5,
                        {**CONFIG, "preprocess": {"crop": 0.9}}, _model())
    with pytest.raises(CheckpointError, match=r"m\.pt: checkpoint config resize must be one of"):
        save_checkpoint(tmp_path / "m.pt", "small_cnn", 5, {**CONFIG, "resize": "strech"},
                        _model())
    # A bare weights container, which says nothing about its input, is left for the runner.
    save_checkpoint(tmp_path / "m.pt", "small_cnn", 5, {"name": "bare"}, _model())


def test_the_preprocessing_is_typed_once_and_a_bare_container_has_none(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", "small_cnn", 5,
                           {**CONFIG, "preprocess": {"crop_pct": 0.875}}, _model())
    config = ModelConfig.from_checkpoint(load_checkpoint(path), "m.pt")
    assert config.preprocess == Preprocess(32, "stretch", (0.5,) * 3, (0.25,) * 3,
                                           crop_pct=0.875)
    assert config.required_preprocess("m.pt") is config.preprocess
    assert config.to_dict()["preprocess"] == {"crop_pct": 0.875}
    bare = ModelConfig.from_checkpoint({"arch": "small_cnn", "num_classes": 5,
                                        "config": {"name": "bare"}}, "bare.pt")
    assert bare.preprocess is None
    with pytest.raises(CheckpointError, match=r"^bare\.pt: checkpoint config lacks a usable "
                                              r"input_size \(got None\)"):
        bare.required_preprocess("bare.pt")
