"""Very wide outputs: OOF given as each row's top k classes, blended without a rows x classes array.

At Herbarium 2020's 32,093 classes a dense OOF array of a million rows does not fit in memory, and
its metric (macro F1 of the one label per row) needs only each row's best classes. So a model's
OOF file may be an `.npz` of

    indices         rows x k integers: the row's k classes (any order, each at most once)
    probabilities   rows x k: their probabilities, in the same order
    num_classes     one integer: the width of the model's output

(`kernelpack predict --per-model --top-k K` writes them). k is the user's choice and may differ
between models.

What a blend of top-k lists means: a model's list stands for its full row with every class it
does not list at the list's smallest probability (its k-th). That row is blended by the kernel's
own rule (`BlendAccumulator`: shift, clip and log for gmean, weight, add, divide), and the label
is its argmax, ties to the lower class index, as for a dense array. The k-th probability is the
most an unlisted class can have had, so a class is never ranked above one the model listed before
it; 0 (the least) would, in a gmean blend, clip to 1e-7 and drop every class that any one model
left out of its list, so the blend would become the lists' intersection. With k = every class,
nothing is filled and the blend is the dense one, bit for bit.

Computed per row over the union of the models' lists (at most the sum of the ks) plus one value
for every class outside it (the same for all of them); memory is rows x (sum of k) per model,
never rows x classes. Every score is exact on that definition: argmax labels, accuracy, macro F1
over all `num_classes` classes, and multiclass log loss (the row normalised over every class).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from inference_core.blend import BLEND_EPS
from inference_core.config import SubmissionSection
from inference_core.top_k import TopK

from ..errors import SearchError
from .metrics import LOGLOSS_EPS, Metric, macro_f1_of_labels
from .oof import read_folds, read_labels

# Rows aligned, and blended, at once: memory holds one chunk's rows x (sum of k) float64 arrays.
CHUNK_ROWS = 8192
# Classes kept per sampled row for the optimiser (the candidates any weighting could make best).
MAX_KEPT = 64
LOW = np.float32(-1e30)
TOP_K_METRICS = ("accuracy", "macro_f1", "logloss")
TOP_K_FORMATS = ("multiclass", "probabilities")


def is_top_k(paths: dict[str, Path]) -> bool:
    """Whether the OOF files are top-k `.npz` files (all of them) or dense `.npy` (none)."""
    kinds = {Path(path).suffix == ".npz" for path in paths.values()}
    if len(kinds) > 1:
        detail = ", ".join(f"{name}={path}" for name, path in paths.items())
        raise SearchError(f"--oof: some files are top-k .npz and some dense .npy ({detail}); "
                          "give every model in one form (kernelpack predict --per-model "
                          "--top-k K writes .npz for all)")
    return kinds == {True}


def read_top_k(name: str, path: Path, n_rows: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(indices, probabilities, num_classes) of one model's top-k file, checked."""
    where = f"{path} (--oof {name})"
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in ("indices", "probabilities", "num_classes")
                       if key not in data.files]
            if missing:
                raise SearchError(f"{where}: no array {missing[0]!r} (found {data.files}); save "
                                  "numpy.savez(PATH, indices=..., probabilities=..., "
                                  "num_classes=...), as kernelpack predict --top-k does")
            indices, probs = data["indices"], data["probabilities"]
            num_classes = data["num_classes"]
    except FileNotFoundError:
        raise SearchError(f"{where}: file not found; check the path after {name}=") from None
    except (ValueError, OSError) as exc:
        raise SearchError(f"{where}: not a readable .npz ({exc}); save it with "
                          "numpy.savez") from None
    if num_classes.shape != () or not np.issubdtype(num_classes.dtype, np.integer) \
            or int(num_classes) < 1:
        raise SearchError(f"{where}: num_classes must be one positive integer, got "
                          f"{num_classes!r}; save the width of the model's output")
    num_classes = int(num_classes)
    if indices.ndim != 2 or indices.shape != probs.shape:
        raise SearchError(f"{where}: indices {indices.shape} and probabilities {probs.shape} must "
                          "both be rows x k; save each row's k classes and their probabilities")
    if not np.issubdtype(indices.dtype, np.integer):
        raise SearchError(f"{where}: indices are {indices.dtype}; save integer class indices")
    if not np.issubdtype(probs.dtype, np.floating):
        raise SearchError(f"{where}: probabilities are {probs.dtype}; save floats")
    if indices.shape[0] != n_rows:
        raise SearchError(f"{where}: {indices.shape[0]} rows but the labels have {n_rows}; save "
                          "one row per labelled sample, in the order of the labels CSV")
    if not 1 <= indices.shape[1] <= num_classes:
        raise SearchError(f"{where}: k = {indices.shape[1]} classes per row, but num_classes is "
                          f"{num_classes}; keep between 1 and num_classes per row")
    if indices.size and (indices.min() < 0 or indices.max() >= num_classes):
        raise SearchError(f"{where}: class indices outside 0..{num_classes - 1}; save column "
                          "indices of the model's output")
    for start in range(0, n_rows, CHUNK_ROWS):
        chunk = np.sort(indices[start:start + CHUNK_ROWS], axis=1)
        repeated = np.flatnonzero((chunk[:, 1:] == chunk[:, :-1]).any(axis=1))
        if repeated.size:
            raise SearchError(f"{where}: row {start + repeated[0]} lists a class twice; list "
                              "each row's k best classes once each")
        values = probs[start:start + CHUNK_ROWS]
        if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
            raise SearchError(f"{where}: probabilities outside [0, 1] (or NaN); save "
                              "probabilities (after softmax), not logits")
    return indices, probs, num_classes


def label_indices(labels: pd.DataFrame, classes: Sequence | None, num_classes: int,
                  source: Path) -> tuple[np.ndarray, list]:
    """Each row's one class index (multiclass), and the classes (0..n-1 without a config)."""
    column = {str(c): j for j, c in enumerate(classes)} if classes is not None else None
    result = np.empty(len(labels), dtype=np.int64)
    for row, (image_id, text) in enumerate(zip(labels["id"], labels["label"], strict=True)):
        tokens = text.split()
        if len(tokens) != 1:
            raise SearchError(f"{source}: row {row + 2} (id {image_id}) holds {len(tokens)} "
                              f"labels {text!r}; top-k OOF is for one label per row "
                              "(multiclass), give one label per row")
        token = tokens[0]
        if column is not None:
            index = column.get(token)
        else:
            index = int(token) if token.isdigit() and int(token) < num_classes else None
        if index is None:
            raise SearchError(f"{source}: row {row + 2} (id {image_id}) has label {token!r}, "
                              f"which is not one of the {num_classes} classes; fix the label, or "
                              "list the classes in submission.classes of the --base config")
        result[row] = index
    return result, list(classes) if classes is not None else list(range(num_classes))


@dataclass
class TopKOofSet:
    """What a search fits on, from top-k files: `labels` is each row's class index."""

    names: list[str]
    lists: list[tuple[np.ndarray, np.ndarray]]  # per model: (indices, probabilities)
    labels: np.ndarray
    num_classes: int
    classes: list
    ids: list[str]
    folds: np.ndarray | None

    @property
    def n_rows(self) -> int:
        return len(self.labels)


def load_top_k_set(oof: dict[str, Path], labels_path: Path, folds_path: Path | None,
                   classes: Sequence | None) -> TopKOofSet:
    labels = read_labels(labels_path)
    lists, widths = [], {}
    for name, path in oof.items():
        indices, probs, width = read_top_k(name, path, len(labels))
        lists.append((indices, probs))
        widths[name] = width
    if len(set(widths.values())) > 1:
        detail = ", ".join(f"{n}: {w}" for n, w in widths.items())
        raise SearchError(f"--oof: the top-k files disagree on num_classes ({detail}); all "
                          "models must share one label space")
    num_classes = next(iter(widths.values()))
    if classes is not None and len(classes) != num_classes:
        raise SearchError(f"--oof: the top-k files have num_classes {num_classes} but "
                          f"submission.classes lists {len(classes)}; give one class per output")
    truth, classes = label_indices(labels, classes, num_classes, labels_path)
    folds = None if folds_path is None else read_folds(folds_path, len(labels))
    return TopKOofSet(list(oof), lists, truth, num_classes, classes, labels["id"].tolist(),
                      folds)


def check_top_k_search(metric: Metric, submission: SubmissionSection) -> None:
    if metric.name not in TOP_K_METRICS:
        raise SearchError(f"--metric {metric.name}: top-k OOF files (.npz) give one label per "
                          f"row; use one of {', '.join(TOP_K_METRICS)}, or dense .npy files for "
                          "multilabel metrics")
    if submission.format not in TOP_K_FORMATS:
        raise SearchError(f"submission.format {submission.format}: top-k OOF files (.npz) give "
                          "one label per row; use --format multiclass (or a multiclass --base), "
                          "or dense .npy files")


class Aligned:
    """Each row's union of the models' lists (`columns`, ascending, padded with num_classes),
    every model's value there (its listed probability, or its k-th where it did not list the
    class) and its k-th value for every class outside the union (`fill`)."""

    def __init__(self, lists: Sequence[tuple[np.ndarray, np.ndarray]], num_classes: int,
                 rows: np.ndarray | slice = slice(None)) -> None:
        indices = [np.asarray(i[rows], dtype=np.int64) for i, _ in lists]
        probs = [np.asarray(p[rows]) for _, p in lists]
        n = len(indices[0])
        self.num_classes = num_classes
        union = np.sort(np.concatenate(indices, axis=1), axis=1)
        repeated = np.zeros(union.shape, dtype=bool)
        repeated[:, 1:] = union[:, 1:] == union[:, :-1]
        union[repeated] = num_classes
        union.sort(axis=1)
        self.n_listed = (union < num_classes).sum(axis=1)
        width = int(self.n_listed.max()) if n else 1
        # int32 halves the largest array but one (any class count below 2**31 fits).
        self.columns = np.ascontiguousarray(union[:, :width], dtype=np.int32)
        self.valid = self.columns < num_classes
        self.fill = [p.min(axis=1) for p in probs]
        # Global positions: row r's classes shifted by r * (num_classes + 1) are sorted overall.
        offset = np.arange(n, dtype=np.int64)[:, None] * (num_classes + 1)
        flat = (self.columns.astype(np.int64) + offset).ravel()
        self.values = []
        for idx, p, fill in zip(indices, probs, self.fill, strict=True):
            values = np.repeat(fill[:, None], width, axis=1).astype(p.dtype)
            where = np.searchsorted(flat, (idx + offset).ravel()) - \
                np.repeat(np.arange(n) * width, idx.shape[1])
            values[np.repeat(np.arange(n), idx.shape[1]), where] = p.ravel()
            self.values.append(values)
        # The lowest class outside the union, where every unlisted class stands (ties go to
        # the lower class, as argmax over a dense row does).
        matches = self.columns == np.arange(width)[None, :]
        self.first_other = np.where(matches.all(axis=1), width, np.argmin(matches, axis=1))
        self.n_other = num_classes - self.n_listed

    def truth_positions(self, labels: np.ndarray) -> np.ndarray:
        """Each row's true class's column, or -1 when it is outside the union."""
        where = np.minimum((self.columns < labels[:, None]).sum(axis=1), self.columns.shape[1] - 1)
        found = self.columns[np.arange(len(labels)), where] == labels
        return np.where(found, where, -1)


def _transform(values: np.ndarray, shift: float, mode: str) -> np.ndarray:
    """What `BlendAccumulator.add_columns` does to a member's values before weighting them."""
    p = np.array(values, dtype=np.float64)
    p -= shift
    if mode == "gmean":
        np.log(np.clip(p, BLEND_EPS, 1.0, out=p), out=p)
    return p


class TopKProblem:
    """Exact scores of weight vectors (at fixed shifts) on top-k OOF; the interface of
    `blend.Problem` that the blend search uses (`score`, `rows`, `n_models`, `metric`)."""

    sampled = False

    def __init__(self, oof: TopKOofSet, metric: Metric, mode: str,
                 submission: SubmissionSection, shifts: Sequence[float],
                 rows: np.ndarray | None = None) -> None:
        check_top_k_search(metric, submission)
        self.oof, self.metric, self.mode, self.submission = oof, metric, mode, submission
        self.shifts = [float(s) for s in shifts]
        self.row_index = np.arange(oof.n_rows) if rows is None else np.asarray(rows)
        self.labels = oof.labels[self.row_index]
        self._chunks: list[tuple[Aligned, np.ndarray]] | None = None

    @property
    def n_models(self) -> int:
        return len(self.oof.names)

    def rows(self, index: np.ndarray) -> TopKProblem:
        """The same problem on some of its rows (`index`: a mask or positions)."""
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else index
        part = TopKProblem(self.oof, self.metric, self.mode, self.submission, self.shifts,
                           self.row_index[index])
        return part

    def chunks(self) -> list[tuple[Aligned, np.ndarray]]:
        """The rows aligned (once), in chunks, with each chunk's true-class positions."""
        if self._chunks is None:
            self._chunks = []
            for start in range(0, len(self.row_index), CHUNK_ROWS):
                rows = self.row_index[start:start + CHUNK_ROWS]
                aligned = Aligned(self.oof.lists, self.oof.num_classes, rows)
                self._chunks.append((aligned, aligned.truth_positions(self.oof.labels[rows])))
        return self._chunks

    def outputs_many(self, weight_sets: Sequence[Sequence[float]],
                     shifts: Sequence[float] | None = None) -> list[np.ndarray]:
        """Per weight vector, each row's output: its label (argmax of the blend), or for log
        loss its loss; each model's chunk is transformed once for all of them."""
        shifts = self.shifts if shifts is None else [float(s) for s in shifts]
        outputs = [[] for _ in weight_sets]
        used = [any(w[m] > 0 for w in weight_sets) for m in range(self.n_models)]
        for aligned, truth_at in self.chunks():
            terms = [(_transform(v, s, self.mode), _transform(f, s, self.mode)) if use else None
                     for v, f, s, use in zip(aligned.values, aligned.fill, shifts, used,
                                             strict=True)]
            for weights, out in zip(weight_sets, outputs, strict=True):
                out.append(self._blend_output(aligned, truth_at, terms, weights))
        return [np.concatenate(out) if out else np.empty(0) for out in outputs]

    def _blend_output(self, aligned: Aligned, truth_at: np.ndarray,
                      terms: list[tuple[np.ndarray, np.ndarray] | None],
                      weights: Sequence[float]) -> np.ndarray:
        total = np.zeros(aligned.columns.shape, dtype=np.float64)
        other = np.zeros(len(total), dtype=np.float64)
        weight_sum = 0.0
        for term, weight in zip(terms, weights, strict=True):
            if weight > 0:
                values, fill = term
                total += values * float(weight)
                other += fill * float(weight)
            weight_sum += float(weight)
        total /= weight_sum
        other /= weight_sum
        if self.mode == "gmean":
            np.exp(total, out=total)
            np.exp(other, out=other)
        every = np.arange(len(total))
        if self.metric.name == "logloss":
            total = np.clip(total, LOGLOSS_EPS, 1 - LOGLOSS_EPS)
            other = np.clip(other, LOGLOSS_EPS, 1 - LOGLOSS_EPS)
            row_sum = np.where(aligned.valid, total, 0.0).sum(axis=1) + aligned.n_other * other
            true_value = np.where(truth_at >= 0, total[every, np.maximum(truth_at, 0)], other)
            return -np.log(true_value / row_sum)
        total[~aligned.valid] = -np.inf
        best = np.argmax(total, axis=1)
        label = aligned.columns[every, best]
        best_value = total[every, best]
        outside = (aligned.n_other > 0) & ((other > best_value) | (
            (other == best_value) & (aligned.first_other < label)))
        return np.where(outside, aligned.first_other, label)

    def score_outputs(self, output: np.ndarray, rows: np.ndarray | None = None) -> float:
        """The metric of per-row outputs (of this problem's rows, or of `rows` among them)."""
        labels = self.labels if rows is None else self.labels[rows]
        output = output if rows is None else output[rows]
        if self.metric.name == "logloss":
            return float(np.mean(output))
        if self.metric.name == "accuracy":
            return float(np.mean(output == labels))
        return macro_f1_of_labels(output, labels, self.oof.num_classes)

    def score(self, weights: Sequence[float]) -> float:
        return self.score_outputs(self.outputs_many([weights])[0])

    def with_shifts(self, shifts: Sequence[float]) -> TopKProblem:
        """The same rows (aligned once, shared) blended with other shifts."""
        self.chunks()
        part = copy.copy(self)
        part.shifts = [float(s) for s in shifts]
        return part

    def sample(self, rows: np.ndarray) -> TopKSample:
        return TopKSample(self, rows)


class TopKExactScores:
    """`blend.ExactScores` for top-k OOF: each weight vector's per-row outputs are computed once,
    on every row, and any fold's score is read from them."""

    def __init__(self, problem: TopKProblem) -> None:
        self.problem = problem
        self._outputs: dict[tuple[float, ...], np.ndarray] = {}

    def score(self, weights: np.ndarray, rows: np.ndarray | None = None) -> float:
        self.prefetch([weights])
        return self.problem.score_outputs(self._outputs[tuple(float(w) for w in weights)], rows)

    def prefetch(self, weight_sets: Sequence[np.ndarray]) -> None:
        keys = list(dict.fromkeys(tuple(float(w) for w in weights) for weights in weight_sets))
        missing = [key for key in keys if key not in self._outputs]
        if missing:
            self._outputs.update(zip(missing, self.problem.outputs_many(missing), strict=True))

    def outputs(self, weights: Sequence[float]) -> np.ndarray:
        self.prefetch([np.asarray(weights)])
        return self._outputs[tuple(float(w) for w in weights)]


class TopKSample:
    """The optimiser's objective on a sample of rows: each model's transformed values in
    float32, one product per candidate; for label metrics only the columns that some weighting
    could make a row's best (its largest value at least the row's best smallest value), at most
    `MAX_KEPT`. Close to the exact score, not equal to it: its best candidates are scored
    exactly before one is chosen."""

    sampled = True

    def __init__(self, problem: TopKProblem, rows: np.ndarray) -> None:
        self.metric, self.num_classes = problem.metric, problem.oof.num_classes
        self.gmean = problem.mode == "gmean"
        index = problem.row_index[rows]
        aligned = Aligned(problem.oof.lists, self.num_classes, index)
        self.labels = problem.oof.labels[index]
        # Every class outside the union is one more column: one value, n_other classes.
        stack = np.stack([np.concatenate([_transform(v, s, problem.mode),
                                          _transform(f, s, problem.mode)[:, None]], axis=1)
                          for v, f, s in zip(aligned.values, aligned.fill, problem.shifts,
                                             strict=True)]).astype(np.float32)
        classes = np.concatenate([aligned.columns, aligned.first_other[:, None]], axis=1)
        valid = np.concatenate([aligned.valid, (aligned.n_other > 0)[:, None]], axis=1)
        stack[:, ~valid] = LOW
        if self.metric.name == "logloss":
            self.classes, self.stack = classes, stack
            self.count = np.concatenate([np.ones(aligned.columns.shape),
                                         aligned.n_other[:, None]], axis=1) * valid
            truth_at = aligned.truth_positions(self.labels)
            self.truth_at = np.where(truth_at >= 0, truth_at, classes.shape[1] - 1)
            return
        # A blend lies between its models' smallest and largest value: a column whose largest
        # is below the row's best smallest value is never the row's best.
        upper = stack.max(axis=0)
        floor = np.max(np.where(valid, stack.min(axis=0), -np.inf), axis=1)
        keep = valid & (upper >= floor[:, None])
        width = min(MAX_KEPT, max(int(keep.sum(axis=1).max()), 1))
        score = np.where(keep, upper, -np.inf)
        best = np.argsort(-score, axis=1, kind="stable")[:, :width]
        kept = np.take_along_axis(keep, best, axis=1)
        self.classes = np.where(kept, np.take_along_axis(classes, best, axis=1), -1)
        self.stack = np.where(kept[None], np.take_along_axis(
            stack, np.broadcast_to(best, (len(stack), *best.shape)), axis=2), LOW)

    @property
    def n_models(self) -> int:
        return len(self.stack)

    def subset(self, rows: np.ndarray) -> TopKSample:
        part = copy.copy(self)
        part.labels, part.classes = self.labels[rows], self.classes[rows]
        part.stack = np.ascontiguousarray(self.stack[:, rows])
        if self.metric.name == "logloss":
            part.count, part.truth_at = self.count[rows], self.truth_at[rows]
        return part

    def score(self, weights: Sequence[float]) -> float:
        w = np.asarray(weights, dtype=np.float32)
        blended = np.einsum("m,mrc->rc", w, self.stack) / w.sum()
        if self.metric.name == "logloss":
            p = np.exp(blended) if self.gmean else blended
            p = np.clip(p, LOGLOSS_EPS, 1 - LOGLOSS_EPS) * (self.count > 0)
            row_sum = (p * self.count).sum(axis=1)
            true_value = p[np.arange(len(p)), self.truth_at]
            return float(np.mean(-np.log(true_value / row_sum)))
        predicted = self.classes[np.arange(len(blended)), np.argmax(blended, axis=1)]
        if self.metric.name == "accuracy":
            return float(np.mean(predicted == self.labels))
        return macro_f1_of_labels(np.maximum(predicted, 0), self.labels, self.num_classes)


def save_top_k(handle: BinaryIO, lists: TopK, num_classes: int) -> None:
    """A top-k OOF file, as `read_top_k` reads it, written to an open binary file."""
    np.savez(handle, indices=lists.indices, probabilities=lists.probabilities,
             num_classes=np.int64(num_classes))
