"""torchvision models, built with `weights=None` (never downloaded); imported lazily."""

from __future__ import annotations

from torch import nn

from ..registry import ModelBuilder, register_model

_TORCHVISION_NAMES = (
    "resnet18", "resnet34", "resnet50", "resnext50_32x4d", "densenet121",
    "efficientnet_b0", "efficientnet_b3", "mobilenet_v3_small", "mobilenet_v3_large",
    "convnext_tiny",
)


def _torchvision_builder(arch: str) -> ModelBuilder:
    def build(num_classes: int, **kwargs) -> nn.Module:
        import torchvision.models as tvm

        # weights=None: never download; num_classes sizes the head directly.
        return tvm.get_model(arch, weights=None, num_classes=num_classes, **kwargs)

    build.__name__ = f"torchvision_{arch}"
    return build


for _arch in _TORCHVISION_NAMES:
    register_model(f"torchvision.{_arch}")(_torchvision_builder(_arch))
