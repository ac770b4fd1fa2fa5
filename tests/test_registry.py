import pytest
import torch

from inference_core.errors import UnknownArchError
from inference_core.registry import create_model, list_models, register_model


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
    assert "@register_model" in message
    assert "\n" not in message


def test_register_model_adds_a_custom_builder_once():
    @register_model("test_only_linear")
    def build(num_classes):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))

    assert "test_only_linear" in list_models("test_only_*")
    assert create_model("test_only_linear", num_classes=4)(torch.zeros(1, 3, 4, 4)).shape == (1, 4)
    with pytest.raises(ValueError, match="registered twice"):
        register_model("test_only_linear")(build)
