"""Prototype heads: scores against plain-torch references, fp16 prototypes, any backbone."""

import numpy as np
import pandas as pd
import pytest
import torch

from inference_core.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from inference_core.config import SubmissionSection
from inference_core.errors import ConfigError, UnknownArchError
from inference_core.fields import read_schema
from inference_core.model_factory import create_model, import_modules
from inference_core.optimize import fold_batchnorm
from inference_core.prototypes import PrototypeNet
from inference_core.submission import SubmissionWriter, topk_labels


def reference_logits(embeddings, prototypes, metric, temperature):
    """The textbook definitions, in float64: cos(e, p) / T, and -sum((e - p)^2) / T."""
    e, p = embeddings.double(), prototypes.double()
    if metric == "cosine":
        e = e / e.norm(dim=1, keepdim=True)
        p = p / p.norm(dim=1, keepdim=True)
        return (e[:, None, :] * p[None, :, :]).sum(-1) / temperature
    return -((e[:, None, :] - p[None, :, :]) ** 2).sum(-1) / temperature


class Identity(torch.nn.Module):
    def forward(self, x):
        return x


def head(prototypes, metric, temperature, chunk):
    """A PrototypeNet whose backbone passes the (N, D) input through: embed(x) is x itself."""
    net = PrototypeNet(Identity(), prototypes.shape[1], prototypes.shape[0], metric, temperature,
                       class_chunk=chunk)
    net.prototypes.copy_(prototypes)
    return net.eval()


@pytest.fixture
def wide():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(7, 16, generator=generator) * 3
    prototypes = torch.randn(5_003, 16, generator=generator) * 3 + 1
    return embeddings, prototypes


@pytest.mark.parametrize("metric,temperature", [("cosine", 0.05), ("sqeuclidean", 2.0)])
@pytest.mark.parametrize("chunk", [1000, 5_003, 8192])
def test_scores_equal_the_textbook_definition(wide, metric, temperature, chunk):
    embeddings, prototypes = wide
    net = head(prototypes, metric, temperature, chunk)
    expected = reference_logits(embeddings, prototypes, metric, temperature)
    with torch.inference_mode():
        full = net(embeddings)
        parts = [net.class_scores(net.embed(embeddings), start, min(start + 777, 5_003))
                 for start in range(0, 5_003, 777)]
    assert full.dtype == torch.float32 and full.shape == (7, 5_003)
    torch.testing.assert_close(full.double(), expected, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(torch.cat(parts, dim=1), full)
    if metric == "cosine":
        norms = net.embed(embeddings).norm(dim=1)
        torch.testing.assert_close(norms, torch.ones(7))


def test_a_class_range_outside_the_classes_is_refused(wide):
    net = head(wide[1], "cosine", 1.0, 1000)
    with pytest.raises(ValueError, match="class range 10:5004 is outside 0:5003"):
        net.class_scores(wide[0], 10, 5_004)


def test_fp16_prototypes_load_from_a_checkpoint_and_score_in_fp32(tmp_path, wide):
    half = wide[1][:300].half()
    torch.manual_seed(0)
    model = create_model("prototype:small_cnn", 300, embedding_dim=16, width=4,
                         metric="sqeuclidean", temperature=4.0)
    model.prototypes = half  # saved as the fp16 buffer it is
    save_checkpoint(tmp_path / "p.pt", "prototype:small_cnn", 300,
                    {"model_kwargs": {"embedding_dim": 16, "width": 4, "metric": "sqeuclidean",
                                      "temperature": 4.0}}, model)
    checkpoint = load_checkpoint(tmp_path / "p.pt")
    assert checkpoint["state_dict"]["prototypes"].dtype == torch.float16
    loaded = model_from_checkpoint(checkpoint, "p.pt")
    assert torch.equal(loaded.prototypes, half.float())
    images = torch.randn(3, 3, 32, 32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = loaded(images)  # even under autocast, the scores are fp32
        embedded = loaded.embed(images)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits.double(),
                               reference_logits(embedded, half.float(), "sqeuclidean", 4.0),
                               rtol=1e-5, atol=1e-3)
    # A buffer left in fp16 (no checkpoint round trip) scores the same.
    with torch.inference_mode():
        torch.testing.assert_close(model.class_scores(embedded), logits, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("arch,kwargs", [
    ("prototype:torchvision.resnet18", {}),
    ("prototype:timm.test_resnet", {}),
    ("prototype_cnn", {"width": 4}),
])
def test_prototype_heads_on_any_backbone_trace_and_fold_exactly(arch, kwargs):
    if arch.startswith("prototype:"):
        kwargs = {"embedding_dim": 24, "metric": "sqeuclidean", "temperature": 8.0, **kwargs}
    torch.manual_seed(0)
    model = create_model(arch, 40, **kwargs).eval()
    model.prototypes.normal_()
    images = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        logits = model(images)
        # The runtime folds BatchNorms through an fx trace: the head must survive it.
        folded = fold_batchnorm(model)(images)
        expected = reference_logits(model.embed(images), model.prototypes, model.metric,
                                    model.temperature)
    assert model.num_classes == 40 and logits.shape == (2, 40)
    torch.testing.assert_close(logits.double(), expected, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(folded, logits, rtol=1e-4, atol=1e-4)


USER_BACKBONE = """\
from torch import nn


def build(num_classes, hidden=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))
"""


def test_the_users_own_backbone_gets_its_kwargs_and_the_embedding_width(tmp_path, monkeypatch):
    (tmp_path / "prototype_test_embedders.py").write_text(USER_BACKBONE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import_modules(["prototype_test_embedders"])  # what --code does
    model = create_model("prototype:prototype_test_embedders:build", 5, embedding_dim=6,
                         hidden=4, metric="sqeuclidean", temperature=0.5).eval()
    assert model.backbone[1].out_features == 4 and model.backbone[3].out_features == 6
    model.prototypes.normal_()
    images = torch.randn(3, 3, 8, 8)
    with torch.inference_mode():
        expected = reference_logits(model.backbone(images), model.prototypes, "sqeuclidean", 0.5)
        torch.testing.assert_close(model(images).double(), expected, rtol=1e-5, atol=1e-4)


def test_prototype_cnn_keeps_its_scaled_cosine_scores():
    model = create_model("prototype_cnn", num_classes=1000, width=4).eval()
    images = torch.randn(3, 3, 32, 32)
    model.prototypes.copy_(torch.randn(1000, 64))
    with torch.inference_mode():
        model.prototypes[7] = 3.0 * model.embed(images)[0]  # the image's own direction
        scores = model(images)
    assert scores.shape == (3, 1000)
    assert scores.abs().max() <= 16.0 + 1e-4  # cosine similarities times 16
    assert scores[0].argmax() == 7 and abs(float(scores[0, 7]) - 16.0) < 1e-4
    assert "prototypes" in model.state_dict()


@pytest.mark.parametrize("arch,kwargs,error,message", [
    ("prototype:", {"embedding_dim": 4}, UnknownArchError, "name a backbone after"),
    ("prototype:prototype:small_cnn", {"embedding_dim": 4}, UnknownArchError, "name a backbone"),
    ("prototype:no_such_net", {"embedding_dim": 4}, UnknownArchError, "unknown architecture"),
    ("prototype:small_cnn", {}, ConfigError, "embedding_dim is missing"),
    ("prototype:small_cnn", {"embedding_dim": 4, "metric": "l2"}, ConfigError,
     "metric must be one of cosine, sqeuclidean, got 'l2'"),
    ("prototype:small_cnn", {"embedding_dim": 4, "temperature": 0}, ConfigError,
     "temperature must be a number of at least 1e-06"),
    ("prototype:small_cnn", {"embedding_dim": 4, "temperature": 1e-300}, ConfigError,
     "temperature must be a number of at least 1e-06"),
])
def test_a_bad_prototype_arch_or_setting_is_one_line_naming_the_checkpoint(
        tmp_path, arch, kwargs, error, message):
    model = create_model("small_cnn", 4, width=4)
    torch.save({"arch": arch, "num_classes": 3, "config": {"model_kwargs": kwargs},
                "state_dict": model.state_dict()}, tmp_path / "bad.pt")
    with pytest.raises(error, match=message) as caught:
        model_from_checkpoint(load_checkpoint(tmp_path / "bad.pt"), "bad.pt")
    assert str(caught.value).startswith("bad.pt: ") and "\n" not in str(caught.value)


def test_topk_submission_lists_the_best_labels_first(tmp_path):
    probs = np.array([[0.1, 0.5, 0.3, 0.1], [0.4, 0.1, 0.2, 0.3]])
    assert topk_labels(probs, ["a", "b", "c", "d"], 2) == ["b c", "a d"]
    assert topk_labels(probs, ["a", "b", "c", "d"], 9) == ["b c a d", "a d c b"]
    submission = read_schema(SubmissionSection, {"format": "topk", "k": 3}, "submission")
    with SubmissionWriter(tmp_path / "s.csv", submission, [10, 11, 12, 13]) as writer:
        writer.write(["x", "y"], probs)
    frame = pd.read_csv(tmp_path / "s.csv", dtype=str)
    assert frame["label"].tolist() == ["11 12 10", "10 13 12"]
