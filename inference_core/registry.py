"""Architecture registry: `@register_model` adds a builder, `create_model` builds offline.

Every builder takes `num_classes` and returns an `nn.Module` with random weights and its
classification head sized for `num_classes`; nothing is downloaded (Kaggle kernels run offline).
Three families are registered: a small custom CNN, torchvision models and `pretrainedmodels`
models. The latter two import their package lazily, so a kernel only needs the package of the
architectures it really uses (`pretrainedmodels` is vendored into bundles when needed).
"""

from __future__ import annotations

import difflib
import fnmatch
import warnings
from collections.abc import Callable

from torch import nn

from .errors import UnknownArchError

ModelBuilder = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: register `builder(num_classes, **kwargs) -> nn.Module` under `name`."""

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder

    return decorate


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a shell-style wildcard, sorted."""
    return sorted(name for name in _REGISTRY if fnmatch.fnmatchcase(name, pattern))


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build architecture `name` with a head of `num_classes` outputs and random weights."""
    try:
        builder = _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f"close names: {', '.join(close)}" if close else "see list_models() for all names"
        raise UnknownArchError(
            f"unknown architecture {name!r}; {hint}; register a custom one with @register_model"
        ) from None
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return builder(num_classes=num_classes, **kwargs)


# --- a small custom CNN that trains in seconds on CPU ------------------------------------------


class SmallCNN(nn.Module):
    """Three conv blocks and global average pooling: any input size, a few hundred kB of weights."""

    def __init__(self, num_classes: int, width: int = 32, in_channels: int = 3) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(
            block(in_channels, width), block(width, width * 2), block(width * 2, width * 4)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width * 4, num_classes)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


@register_model("small_cnn")
def small_cnn(num_classes: int, width: int = 32) -> nn.Module:
    return SmallCNN(num_classes, width=width)


# --- torchvision --------------------------------------------------------------------------------

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


# --- pretrainedmodels (Cadene) ------------------------------------------------------------------

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
