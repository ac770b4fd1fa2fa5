import pytest
import torch

from inference_core.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from inference_core.errors import CheckpointError, UnknownArchError
from inference_core.registry import create_model

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
    with pytest.raises(TypeError, match=r"config.mean: tensor|config.mean: Tensor"):
        save_checkpoint(tmp_path / "m.pt", "small_cnn", 5, {**CONFIG, "mean": torch.ones(3)},
                        _model())
    assert not (tmp_path / "m.pt").exists()


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
    with pytest.raises(UnknownArchError, match="unknown architecture 'small_cn'"):
        model_from_checkpoint({**checkpoint, "arch": "small_cn"})
