import numpy as np
import pandas as pd
import pytest
import torch

from inference_core.config import SUBMISSION, _validate_section
from inference_core.prototypes import class_scores, topk_by_chunks
from inference_core.registry import create_model
from inference_core.submission import SubmissionWriter, topk_labels


@pytest.fixture
def wide():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(37, 16, generator=generator), dim=1)
    prototypes = torch.randn(32_000, 16, generator=generator)
    return embeddings, prototypes


@pytest.mark.parametrize("chunk", [1000, 4096, 32_000, 50_000])
def test_chunked_scores_equal_unchunked(wide, chunk):
    embeddings, prototypes = wide
    expected = 16.0 * embeddings @ torch.nn.functional.normalize(prototypes, dim=1).T
    torch.testing.assert_close(class_scores(embeddings, prototypes, 16.0, chunk), expected)


@pytest.mark.parametrize("chunk", [999, 8192, 32_000])
def test_chunked_topk_equals_topk_of_the_full_matrix(wide, chunk):
    embeddings, prototypes = wide
    full = class_scores(embeddings, prototypes, 16.0, 32_000)
    values, index = full.topk(5, dim=1)
    chunk_values, chunk_index = topk_by_chunks(embeddings, prototypes, 5, 16.0, chunk)
    torch.testing.assert_close(chunk_values, values)
    assert torch.equal(chunk_index, index)


def test_prototype_network_builds_from_the_registry_and_scores_every_class():
    model = create_model("prototype_cnn", num_classes=1000, width=4).eval()
    model.prototypes.copy_(torch.randn(1000, 64))
    with torch.inference_mode():
        scores = model(torch.randn(3, 3, 32, 32))
    assert scores.shape == (3, 1000)
    assert scores.abs().max() <= 16.0 + 1e-4  # scaled cosine similarities
    assert "prototypes" in model.state_dict()


def test_topk_submission_lists_the_best_labels_first(tmp_path):
    probs = np.array([[0.1, 0.5, 0.3, 0.1], [0.4, 0.1, 0.2, 0.3]])
    assert topk_labels(probs, ["a", "b", "c", "d"], 2) == ["b c", "a d"]
    assert topk_labels(probs, ["a", "b", "c", "d"], 9) == ["b c a d", "a d c b"]
    submission = _validate_section({"format": "topk", "k": 3}, SUBMISSION, "submission")
    with SubmissionWriter(tmp_path / "s.csv", submission, [10, 11, 12, 13]) as writer:
        writer.write(["x", "y"], probs)
    frame = pd.read_csv(tmp_path / "s.csv", dtype=str)
    assert frame["label"].tolist() == ["11 12 10", "10 13 12"]
