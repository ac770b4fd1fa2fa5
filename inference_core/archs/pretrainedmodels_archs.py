"""Cadene's `pretrainedmodels`, imported lazily: a kernel needs the package only when one of
these architectures is in the ensemble (the bundler vendors it, as the Kaggle image lacks it)."""

from __future__ import annotations

import warnings

from torch import nn

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


def _pretrainedmodels_builder(arch: str) -> ModelBuilder:
    def build(num_classes: int, **kwargs) -> nn.Module:
        import pretrainedmodels

        with warnings.catch_warnings():
            # The torchvision-backed ones (resnet*, ...) warn that `pretrained` is deprecated.
            warnings.simplefilter("ignore", UserWarning)
            model = pretrainedmodels.__dict__[arch](
                num_classes=num_classes, pretrained=None, **kwargs
            )
        # The torchvision-backed ones also ignore num_classes and keep a 1000-way head.
        model.last_linear = _sized_head(model.last_linear, num_classes)
        return model

    build.__name__ = f"pretrainedmodels_{arch}"
    return build


for _arch in _PRETRAINEDMODELS_NAMES:
    register_model(_arch)(_pretrainedmodels_builder(_arch))
