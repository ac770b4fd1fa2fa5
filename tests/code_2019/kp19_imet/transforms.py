# ruff: noqa  -- written as 2019 code was, and kept so
import random
import math

import cv2
from albumentations import (
    Compose, HorizontalFlip, Normalize, RandomBrightnessContrast, IAAAdditiveGaussianNoise,
    IAAPerspective, JpegCompression, ShiftScaleRotate,
)
from albumentations.pytorch import ToTensor


train_transform = Compose([
    ShiftScaleRotate(shift_limit=0.05, scale_limit=0.1, rotate_limit=10),
    HorizontalFlip(),
    RandomBrightnessContrast(),
    IAAAdditiveGaussianNoise(p=0.2),
    IAAPerspective(p=0.2),
    JpegCompression(quality_lower=80),
])

tensor_transform = Compose([Normalize(), ToTensor()])


def random_crop_size(side, ratio):
    return int(round(math.sqrt(side * side * random.uniform(ratio, 1.0))))
