import numpy as np
import pandas as pd
import pytest

from inference_core.config import SubmissionSection
from inference_core.errors import ConfigError
from inference_core.fields import read_schema
from inference_core.submission import TOPK_ROWS, SubmissionWriter, multilabel_labels, topk_labels

PROBS = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.05, 0.05, 0.9], [0.4, 0.45, 0.15]])
IDS = ["a", "b", "0042", "d"]  # "0042" must stay a string id, not become 42


def _submission(**fields):
    return read_schema(SubmissionSection, fields, "submission")


def _write(path, submission, classes, batches=2):
    with SubmissionWriter(path, submission, classes) as writer:
        for ids, probs in zip(np.array_split(IDS, batches), np.array_split(PROBS, batches),
                              strict=True):
            writer.write(list(ids), probs)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_multiclass_round_trips_through_pandas(tmp_path):
    classes = ["cat", "dog", "owl"]
    frame = _write(tmp_path / "submission.csv", _submission(format="multiclass"), classes)
    assert list(frame.columns) == ["id", "label"]
    assert frame["id"].tolist() == IDS
    assert frame["label"].tolist() == ["dog", "cat", "owl", "dog"]


def test_multilabel_round_trips_with_space_separated_labels(tmp_path):
    submission = _submission(format="multilabel", threshold=0.3, id_column="Id",
                             label_column="attribute_ids")
    frame = _write(tmp_path / "submission.csv", submission, [10, 20, 30])
    assert list(frame.columns) == ["Id", "attribute_ids"]
    assert frame["attribute_ids"].tolist() == ["20", "10 20", "30", "10 20"]
    parsed = [sorted(int(x) for x in row.split()) for row in frame["attribute_ids"]]
    assert parsed == [[20], [10, 20], [30], [10, 20]]


def test_probabilities_round_trip_to_the_same_numbers(tmp_path):
    frame = _write(tmp_path / "submission.csv", _submission(format="probabilities"), [0, 1, 2])
    assert list(frame.columns) == ["id", "0", "1", "2"]
    np.testing.assert_allclose(frame[["0", "1", "2"]].astype(float).to_numpy(), PROBS, rtol=1e-5)


def test_multilabel_min_and_max_labels_and_per_class_thresholds():
    probs = np.array([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]])
    assert multilabel_labels(probs, "abc", 0.5, min_labels=1) == ["c", "a b c"]
    assert multilabel_labels(probs, "abc", 0.5, min_labels=2) == ["b c", "a b c"]
    assert multilabel_labels(probs, "abc", 0.5, min_labels=0) == ["", "a b c"]
    assert multilabel_labels(probs, "abc", 0.5, max_labels=2) == ["c", "a b"]
    assert multilabel_labels(probs, "abc", [0.05, 0.95, 0.95], min_labels=0) == ["a", "a"]


def test_a_failure_mid_way_leaves_no_submission_and_no_partial_file(tmp_path):
    target = tmp_path / "submission.csv"
    target.write_text("previous good submission\n")
    with pytest.raises(RuntimeError), \
            SubmissionWriter(target, _submission(format="multiclass"), [0, 1, 2]) as writer:
        writer.write(IDS[:2], PROBS[:2])
        raise RuntimeError("kernel died")
    assert target.read_text() == "previous good submission\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.csv"]


def test_per_class_thresholds_must_match_the_classes(tmp_path):
    with pytest.raises(ConfigError, match="threshold has 2 values but the models have 3"):
        SubmissionWriter(tmp_path / "s.csv", _submission(format="multilabel", threshold=[0.1, 0.2]),
                         [0, 1, 2])


def test_topk_labels_are_the_k_most_probable_best_first_across_row_blocks():
    rng = np.random.default_rng(0)
    probs = rng.random((TOPK_ROWS * 3 + 5, 50))  # several row blocks and a short last one
    classes = [f"c{i}" for i in range(50)]
    expected = [" ".join(classes[i] for i in row)
                for row in np.argsort(-probs, axis=1, kind="stable")[:, :5]]
    assert topk_labels(probs, classes, 5) == expected
    assert topk_labels(probs[:2, :3], classes, 5) == [
        " ".join(classes[i] for i in np.argsort(-row)) for row in probs[:2, :3]]
