# ruff: noqa  -- written as 2019 code was, and kept so
import argparse

import pandas as pd

from .utils import mean_df
from .dataset import DATA_ROOT


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('predictions', nargs='+')
    parser.add_argument('--output', default='submission.csv')
    args = parser.parse_args()
    sample = pd.read_csv(DATA_ROOT / 'sample_submission.csv', index_col='id')
    dfs = [pd.read_hdf(p, index_col='id') for p in args.predictions]
    df = mean_df(pd.concat(dfs))
    df = df.reindex(sample.index)
    df.to_csv(args.output)


if __name__ == '__main__':
    main()
