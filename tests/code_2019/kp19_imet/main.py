# ruff: noqa  -- written as 2019 code was, and kept so
import argparse
from itertools import islice
import json
from pathlib import Path
import shutil
import warnings

import numpy as np
import pandas as pd
import torch
from torch import nn, cuda
from torch.optim import Adam
from torch.utils.data import DataLoader
from apex import amp

from . import models
from .dataset import TrainDataset, DATA_ROOT
from .transforms import train_transform
from .utils import write_event, load_model, mean_df, ON_KAGGLE


def main():
    parser = argparse.ArgumentParser()
    arg = parser.add_argument
    arg('mode', choices=['train', 'validate', 'predict_valid', 'predict_test'])
    arg('run_root')
    arg('--model', default='tiny_senet')
    arg('--batch-size', type=int, default=64)
    arg('--lr', type=float, default=1e-4)
    args = parser.parse_args()
    run_root = Path(args.run_root)
    folds = pd.read_csv('folds.csv')
    model = models.get_model(args.model, n_classes=1103, pretrained=True)
    optimizer = Adam(model.parameters(), lr=args.lr)
    model, optimizer = amp.initialize(model, optimizer, opt_level='O1')
    loader = DataLoader(TrainDataset(DATA_ROOT / 'train', folds, train_transform),
                        batch_size=args.batch_size, shuffle=True)
    for inputs, targets in islice(loader, 10):
        loss = nn.BCEWithLogitsLoss()(model(inputs), targets)
        with amp.scale_loss(loss, optimizer) as scaled:
            scaled.backward()
        optimizer.step()
    torch.save({'model': model.state_dict(), 'epoch': 1, 'step': 10}, str(run_root / 'best.pt'))


if __name__ == '__main__':
    main()
