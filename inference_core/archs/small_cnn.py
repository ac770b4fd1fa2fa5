"""A small custom CNN that trains in seconds on CPU (the demo's model)."""

from __future__ import annotations

from torch import nn

from ..registry import register_model


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
