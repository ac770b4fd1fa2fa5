"""Every registered architecture runs at any input size and aspect, with the numbers of an
independent reference: the library's own model, with (for pretrainedmodels' fixed 7x7, 8x8, 9x9
or 11x11 head pools) the replacement competitors make when they train at other sizes,
`model.avg_pool = nn.AdaptiveAvgPool2d(1)`, on the same weights."""

import os
import warnings

import pretrainedmodels
import pytest
import torch
import torchvision
from torch import nn

from inference_core.model_factory import create_model, list_models

NUM_CLASSES = 5
NON_SQUARE = (256, 352)  # (height, width): neither 224 nor square

# pretrainedmodels' architectures and the attribute holding the fixed pool before their head
# (None: it pools adaptively already, or, for dpn68, has its own test-time pool).
PRETRAINEDMODELS_POOLS = {
    "se_resnext50_32x4d": "avg_pool", "se_resnext101_32x4d": "avg_pool", "se_resnet50": "avg_pool",
    "senet154": "avg_pool", "bninception": "global_pool", "inceptionv4": "avg_pool",
    "nasnetamobile": "avg_pool", "pnasnet5large": "avg_pool", "polynet": "avg_pool",
    "resnet18": None, "resnet34": None, "resnet50": None, "xception": None, "dpn68": None,
}
# Our own models: no library reference, the shape is checked.
OWN = ("small_cnn", "prototype_cnn")
# The built-in names (collected before any test registers its own).
ARCHS = list_models()
# 0.1-0.3 GB of weights each: building two and running them takes 10 s each on a loaded 2-core
# CPU, so they run only on request (their pools, 7x7, 9x9, 11x11, take the same path as
# se_resnext50's, which always runs).
BIG = ("senet154", "pnasnet5large", "polynet")
BIG_ENV = "KERNELPACK_TEST_BIG_ARCHS"
# Over 20 M parameters: about a second each here with their reference, so only the full suite
# runs them; `-m "not slow"` keeps the smaller ones, which take the same code paths.
LARGE = (*BIG, "inceptionv4", "resnet34", "resnet50", "se_resnet50", "se_resnext50_32x4d",
         "se_resnext101_32x4d", "xception", "torchvision.convnext_tiny", "torchvision.resnet34",
         "torchvision.resnet50", "torchvision.resnext50_32x4d")


@pytest.fixture(autouse=True)
def one_thread():
    """One thread per forward: on a few shared cores, torch's threads slow each other down
    (measured: inceptionv4 at 256x352 takes 1 s with one thread, 10 s with two, under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pretrainedmodels_reference(arch, replace_pool=True):
    """pretrainedmodels' model with its head sized for NUM_CLASSES and, as competitors do, its
    fixed head pool replaced by an adaptive one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = pretrainedmodels.__dict__[arch](num_classes=1000, pretrained=None)
    head = model.last_linear
    if isinstance(head, nn.Conv2d):
        model.last_linear = nn.Conv2d(head.in_channels, NUM_CLASSES, kernel_size=1)
    else:
        model.last_linear = nn.Linear(head.in_features, NUM_CLASSES)
    pool = PRETRAINEDMODELS_POOLS[arch]
    if pool and replace_pool:
        setattr(model, pool, nn.AdaptiveAvgPool2d(1))
    return model


def _reference(arch):
    if arch in PRETRAINEDMODELS_POOLS:
        return _pretrainedmodels_reference(arch)
    if arch.startswith("torchvision."):
        return torchvision.models.get_model(arch.removeprefix("torchvision."), weights=None,
                                            num_classes=NUM_CLASSES)
    return None


def _outputs(model, height, width, seed=0):
    x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return model.eval()(x)


def test_every_registered_arch_has_a_reference_here():
    assert set(ARCHS) == {*PRETRAINEDMODELS_POOLS, *OWN, *list_models("torchvision.*")}


@pytest.mark.parametrize("arch", [
    pytest.param(arch, marks=[
        *([pytest.mark.slow] if arch in LARGE else []),
        pytest.mark.skipif(arch in BIG and not os.environ.get(BIG_ENV),
                           reason=f"big on CPU; set {BIG_ENV}=1")])
    for arch in ARCHS])
def test_arch_runs_non_square_with_the_references_numbers(arch):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=NUM_CLASSES)
    out = _outputs(model, *NON_SQUARE)
    assert out.shape == (1, NUM_CLASSES) and torch.isfinite(out).all()
    reference = _reference(arch)
    if reference is None:
        assert arch in OWN
        return
    # The state dict of the usual replacement is the registry's, key for key (strict both ways).
    reference.load_state_dict(model.state_dict(), strict=True)
    model.load_state_dict(reference.state_dict(), strict=True)
    torch.testing.assert_close(out, _outputs(reference, *NON_SQUARE), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("size", [(288, 288), (256, 352)])
def test_se_resnext50_takes_weights_trained_with_an_adaptive_pool_at_other_sizes(size):
    torch.manual_seed(1)
    trained = _pretrainedmodels_reference("se_resnext50_32x4d")  # as the competitor trained it
    model = create_model("se_resnext50_32x4d", num_classes=NUM_CLASSES)
    model.load_state_dict(trained.state_dict(), strict=True)
    torch.testing.assert_close(_outputs(model, *size), _outputs(trained, *size),
                               rtol=1e-5, atol=1e-5)
    # Not vacuous: pretrainedmodels' own fixed pool cannot take this size.
    original = _pretrainedmodels_reference("se_resnext50_32x4d", replace_pool=False)
    original.load_state_dict(trained.state_dict(), strict=True)
    with pytest.raises(RuntimeError):
        _outputs(original, *size)


@pytest.mark.parametrize("arch, size", [
    pytest.param("se_resnext50_32x4d", 224, marks=pytest.mark.slow), ("bninception", 224),
    pytest.param("inceptionv4", 299, marks=pytest.mark.slow)])
def test_at_the_design_size_the_numbers_are_pretrainedmodels_own(arch, size):
    torch.manual_seed(2)
    model = create_model(arch, num_classes=NUM_CLASSES)
    original = _pretrainedmodels_reference(arch, replace_pool=False)
    original.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(_outputs(model, size, size), _outputs(original, size, size),
                               rtol=1e-5, atol=1e-5)


def test_dpn68_below_its_test_time_pool_takes_the_training_head():
    torch.manual_seed(3)
    model = create_model("dpn68", num_classes=NUM_CLASSES)
    reference = _pretrainedmodels_reference("dpn68")
    reference.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 3, 128, 160)  # a 4x5 feature map: smaller than the 7x7 window
    with torch.inference_mode():
        expected = reference.last_linear(
            nn.functional.adaptive_avg_pool2d(reference.eval().features(x), 1)).flatten(1)
        with pytest.raises(RuntimeError):
            reference(x)  # pretrainedmodels' own eval head fails here
        torch.testing.assert_close(model.eval()(x), expected, rtol=1e-5, atol=1e-5)
