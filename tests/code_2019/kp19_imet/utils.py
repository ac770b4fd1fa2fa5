# ruff: noqa  -- written as 2019 code was, and kept so
import json
import glob
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

try:
    from apex import amp
except ImportError:
    amp = None

ON_KAGGLE: bool = 'KAGGLE_WORKING_DIR' in os.environ


def gmean_df(df: pd.DataFrame) -> pd.DataFrame:
    return df.groupby(level=0).agg(lambda x: np.exp(np.mean(np.log(x))))


def mean_df(df: pd.DataFrame) -> pd.DataFrame:
    return df.groupby(level=0).mean()


def load_model(model: torch.nn.Module, path: Path):
    state = torch.load(str(path), map_location='cpu')
    model.load_state_dict(state['model'])
    print('Loaded model from epoch {epoch}, step {step:,}'.format(**state))
    return state


def write_event(log, step: int, **data):
    data['step'] = step
    data['dt'] = datetime.now().isoformat()
    log.write(json.dumps(data, sort_keys=True))
    log.write('\n')
    log.flush()


def tensorboard_writer(run_root: Path):
    from tensorboardX import SummaryWriter
    return SummaryWriter(str(run_root / 'tb'))


def find_runs(root: str):
    return sorted(glob.glob(os.path.join(root, '*', 'params.json')))


def progress(items):
    return tqdm(items, disable=ON_KAGGLE)
