"""Cadene's `pretrainedmodels`, imported lazily: a kernel needs the package only when one of
these architectures is in the ensemble (the bundler vendors it, as the Kaggle image lacks it).

They run at any input size and aspect: the fixed average pool before the head (7x7 for 224 px
inputs, 8x8 for inceptionv4's 299, 9x9 and 11x11 for polynet's and pnasnet's 331) becomes
adaptive, as competitors do when they train at 288, 320 or 352 px. It has no parameters, so the
state-dict keys are those of the usual `model.avg_pool = nn.AdaptiveAvgPool2d(1)` replacement,
and at the size the model was designed for both give the same numbers.
"""

from __future__ import annotations

import types
import warnings
from importlib.util import find_spec

from torch import nn
from torch.nn import functional

from ..errors import UnknownArchError
from ..registry import ModelBuilder, register_model

_PRETRAINEDMODELS_NAMES = (
    "se_resnext50_32x4d", "se_resnext101_32x4d", "se_resnet50", "senet154",
    "resnet18", "resnet34", "resnet50", "bninception", "inceptionv4", "xception",
    "nasnetamobile", "pnasnet5large", "polynet", "dpn68",
)


def _sized_head(head: nn.Module, num_classes: int) -> nn.Module:
    """`head` if it already has `num_classes` outputs, else a fresh layer of the same kind."""
    if isinstance(head, nn.Linear) and head.out_features != num_classes:
        return nn.Linear(head.in_features, num_classes)
    if isinstance(head, nn.Conv2d) and head.out_channels != num_classes:  # dpn* use a 1x1 conv
        return nn.Conv2d(head.in_channels, num_classes, kernel_size=1)
    return head


# The attributes that hold the fixed pool before the head (xception and the torchvision-backed
# resnet* pool adaptively already).
_HEAD_POOLS = ("avg_pool", "global_pool")
# dpn*'s eval-time head: a 7x7 average pool, the 1x1-conv classifier, then global avg+max pooling.
_DPN_TEST_POOL = 7


def _adaptive_head_pool(model: nn.Module) -> None:
    for attribute in _HEAD_POOLS:
        if isinstance(getattr(model, attribute, None), nn.AvgPool2d):
            setattr(model, attribute, nn.AdaptiveAvgPool2d(1))


def _dpn_logits(self: nn.Module, features):
    """dpn's test-time pool is its own, size-independent eval head, kept as it is; only a
    feature map smaller than its 7x7 window (inputs under 193 px) takes the training path
    (global average pool, then the classifier) instead of failing."""
    if min(features.shape[-2:]) >= _DPN_TEST_POOL:
        return type(self).logits(self, features)
    return self.last_linear(functional.adaptive_avg_pool2d(features, 1)).flatten(1)


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or one marked absent in sys.modules
        return False


def _pretrainedmodels_builder(arch: str) -> ModelBuilder:
    def build(num_classes: int, **kwargs) -> nn.Module:
        # Asked first, not caught: an import inside try/except ImportError is optional to the
        # bundler, which would then not vendor pretrainedmodels into the kernel.
        if not _installed("pretrainedmodels"):
            raise UnknownArchError(
                f"{arch}: needs Cadene's pretrainedmodels, which is not installed; install it "
                "where you build (pip install 'kernelpack[pretrainedmodels]'): the bundler then "
                "vendors it into the kernel")
        import pretrainedmodels

        with warnings.catch_warnings():
            # The torchvision-backed ones (resnet*, ...) warn that `pretrained` is deprecated.
            warnings.simplefilter("ignore", UserWarning)
            model = pretrainedmodels.__dict__[arch](
                num_classes=num_classes, pretrained=None, **kwargs
            )
        # The torchvision-backed ones also ignore num_classes and keep a 1000-way head.
        model.last_linear = _sized_head(model.last_linear, num_classes)
        _adaptive_head_pool(model)
        if arch.startswith("dpn"):
            # Bound to the model, so that a deep copy calls its own copy's layers.
            model.logits = types.MethodType(_dpn_logits, model)
        return model

    build.__name__ = f"pretrainedmodels_{arch}"
    return build


for _arch in _PRETRAINEDMODELS_NAMES:
    register_model(_arch)(_pretrainedmodels_builder(_arch))
