# ruff: noqa  -- written as 2019 code was, and kept so
import argparse

from apex.parallel import DistributedDataParallel
import kp19_net


if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('--width', type=int, default=8)
    model = DistributedDataParallel(kp19_net.Net({'width': 8, 'classes': 5}))
