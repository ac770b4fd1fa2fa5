# ruff: noqa  -- written as 2019 code was, and kept so
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F
from pretrainedmodels.models.senet import SEModule


class AvgPool(nn.Module):
    def forward(self, x):
        return F.avg_pool2d(x, x.shape[2:])


class TinySENet(nn.Module):
    """A small stand-in for se_resnext50: conv stem, one squeeze-excitation block, a linear head."""

    def __init__(self, num_classes, width=12, dropout=0.0):
        super().__init__()
        self.layer0 = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
                                    nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.layer1 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
                                    SEModule(width, reduction=4))
        self.avg_pool = AvgPool()
        self.dropout = nn.Dropout(dropout) if dropout else None
        self.last_linear = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.avg_pool(self.layer1(self.layer0(x))).flatten(1)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.last_linear(x)


def create_net(net_cls, pretrained: bool):
    if pretrained:
        raise ValueError('pretrained weights are downloaded; not in a kernel')
    return net_cls()


tiny_senet = partial(TinySENet, width=12)
wide_senet = partial(TinySENet, width=20)


def get_model(arch: str, n_classes: int, pretrained: bool = False):
    """The training script's factory: the architecture by name, the class count as n_classes."""
    net_cls = {'tiny_senet': tiny_senet, 'wide_senet': wide_senet}[arch]
    model = create_net(partial(net_cls, num_classes=n_classes), pretrained)
    if torch.cuda.is_available():
        model = model.cuda()
    return model
