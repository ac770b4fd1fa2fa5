"""Building blocks of DigitNet (imported relatively, as a real package does)."""

from torch import nn


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.SiLU(inplace=True),
        nn.MaxPool2d(2),
    )


class GeMHead(nn.Module):
    """Generalised-mean pooling and a linear classifier: a typical custom head."""

    def __init__(self, features: int, num_classes: int, p: float = 3.0) -> None:
        super().__init__()
        self.p = p
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x):
        pooled = x.clamp(min=1e-6).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)
        return self.fc(pooled)
