"""Each row's k best classes, best first, and their probabilities: what `predict --top-k` and a
fan-out shard keep of a very wide output (32,000 classes), reduced batch by batch so that memory
holds rows x k, never rows x classes. numpy only: it runs in the kernel too."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TopK:
    """Each row's k best classes, best first, and their probabilities: the form of a top-k OOF
    file (`save_top_k`)."""

    indices: np.ndarray  # rows x k, int32
    probabilities: np.ndarray  # rows x k


def top_k_of(probs: np.ndarray, k: int) -> TopK:
    """The `k` largest of each row (all of them when k >= the width), best first, ties to the
    lower class. Which of the classes tied at the k-th place are listed changes nothing: an
    unlisted class stands at the k-th probability, which is theirs."""
    width = probs.shape[1]
    k = min(k, width)
    if k < width:
        chosen = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    else:
        chosen = np.broadcast_to(np.arange(width), probs.shape)
    values = np.take_along_axis(probs, chosen, axis=1)
    order = np.lexsort((chosen, -values), axis=1)
    return TopK(np.take_along_axis(chosen, order, axis=1).astype(np.int32),
                np.take_along_axis(values, order, axis=1))


class TopKRows:
    """Top-k lists of `n_rows` rows, filled batch by batch (`put`): memory is rows x k."""

    def __init__(self, n_rows: int, k: int, n_classes: int) -> None:
        self.k, self.n_classes = min(k, n_classes), n_classes
        self.result = TopK(np.zeros((n_rows, self.k), dtype=np.int32),
                           np.zeros((n_rows, self.k), dtype=np.float64))

    def put(self, begin: int, probs: np.ndarray) -> None:
        """The top-k of `probs`, the rows from `begin` on; a row holding NaN or infinities
        keeps NaN, so that writing it is refused as a dense array's would be."""
        part = top_k_of(probs, self.k)
        part.probabilities[~np.isfinite(probs).all(axis=1)] = np.nan
        end = begin + len(probs)
        self.result.indices[begin:end] = part.indices
        self.result.probabilities[begin:end] = part.probabilities
