"""DigitNet: the example's own architecture, not in any registry."""

from torch import nn

from .blocks import GeMHead, conv_block


class DigitNet(nn.Module):
    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_block(3, width), conv_block(width, width * 2),
                                      conv_block(width * 2, width * 4))
        self.head = GeMHead(width * 4, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


def build(num_classes: int, width: int = 16) -> nn.Module:
    """What a checkpoint's `arch: digitnet.net:build` calls."""
    return DigitNet(num_classes, width=width)
