from pathlib import Path

import cv2
import pandas as pd
import torch
from torch.utils.data import Dataset

from .transforms import tensor_transform

N_CLASSES = 1103
DATA_ROOT = Path(__file__).parent.parent / 'data'


class TrainDataset(Dataset):
    def __init__(self, root: Path, df: pd.DataFrame, image_transform, debug: bool = True):
        super().__init__()
        self._root = root
        self._df = df
        self._image_transform = image_transform
        self._debug = debug

    def __len__(self):
        return len(self._df)

    def __getitem__(self, idx: int):
        item = self._df.iloc[idx]
        image = load_transform_image(item, self._root, self._image_transform)
        target = torch.zeros(N_CLASSES)
        for cls in item.attribute_ids.split():
            target[int(cls)] = 1
        return image, target


def load_transform_image(item, root: Path, image_transform):
    image = cv2.cvtColor(cv2.imread(str(root / f'{item.id}.png')), cv2.COLOR_BGR2RGB)
    image = image_transform(image=image)['image']
    return tensor_transform(image=image)['image']
