"""A prototype member scored in class chunks blends exactly as its full score rows would.

The prototype head here is the test's own (squared Euclidean or cosine to per-class prototypes,
a temperature), written only against the runtime's contract (`embed`, `class_scores`,
`num_classes`); the reference computes every full row with plain torch (`torch.cdist`,
`softmax`) and blends with plain numpy, never through inference_core.
"""

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional

from inference_core.blend import BLEND_EPS, BlendAccumulator
from inference_core.budget import rank_units
from inference_core.config import SubmissionSection
from inference_core.fields import read_schema
from inference_core.model_factory import create_model
from inference_core.predict import EnsemblePredictor, Member
from inference_core.preprocess import Preprocess
from inference_core.submission import SubmissionWriter

CLASSES = 23  # not a multiple of the chunks tried, so the last chunk is short
DIM = 6
PREPROCESS = Preprocess(16, "stretch", (0.5,) * 3, (0.25,) * 3)


class TestPrototypeHead(nn.Module):
    """Backbone -> embedding; logits = -||e - p||^2 / T, or cos(e, p) / T."""

    __test__ = False

    def __init__(self, metric: str, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten(), nn.Linear(4, DIM))
        self.register_buffer("prototypes", torch.randn(CLASSES, DIM))
        self.metric, self.temperature, self.num_classes = metric, 0.7, CLASSES

    def embed(self, x):
        e = self.backbone(x)
        return functional.normalize(e, dim=1) if self.metric == "cosine" else e

    def class_scores(self, e, start=0, stop=None):
        p = self.prototypes[start:stop]
        if self.metric == "cosine":
            return e @ functional.normalize(p, dim=1).T / self.temperature
        return -((e * e).sum(1, keepdim=True) - 2 * e @ p.T + (p * p).sum(1)) / self.temperature

    def forward(self, x):
        return self.class_scores(self.embed(x))


def _runtime_head(metric: str, seed: int) -> nn.Module:
    """The runtime's own PrototypeNet (`prototype:small_cnn`), prototypes stored in fp16."""
    torch.manual_seed(seed)
    model = create_model("prototype:small_cnn", num_classes=CLASSES, embedding_dim=DIM,
                         metric=metric, temperature=0.7, width=4)
    model.prototypes = torch.randn(CLASSES, DIM).half()
    return model


def _reference_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    e, prototypes = model.backbone(x).double(), model.prototypes.double()
    if model.metric == "cosine":
        cos = functional.cosine_similarity(e[:, None, :], prototypes[None], dim=2)
        return cos / model.temperature
    return -torch.cdist(e, prototypes) ** 2 / model.temperature


@pytest.fixture(scope="module")
def digit_tensors(tmp_path_factory):
    """Five real digits (8x8 grey, as RGB PNGs) prepared at 16 px by the kernel's own loader."""
    folder = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    paths = []
    for i in range(5):
        path = folder / f"{i}.png"
        Image.fromarray((digits.images[i] * 15).astype(np.uint8)).convert("RGB").save(path)
        paths.append(path)
    return paths


def _members(metric: str, activation: str, tta: list[str], head=TestPrototypeHead
              ) -> list[Member]:
    torch.manual_seed(3)
    classifier = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                               nn.Flatten(), nn.Linear(5, CLASSES)).eval()
    return [Member("proto_a", head(metric, 0).eval(), PREPROCESS, 2.0, 0.0,
                   list(tta), activation, CLASSES, None),
            Member("proto_b", head(metric, 1).eval(), PREPROCESS, 1.0, 0.01,
                   list(tta), activation, CLASSES, None),
            Member("classifier", classifier, PREPROCESS, 1.5, 0.0, list(tta), activation,
                   CLASSES, None)]


def _run(members, paths, chunk, blend, tta_blend, decoded_only=None):
    predictor = EnsemblePredictor(members, "fp32", [torch.device("cpu")], tta_blend=tta_blend,
                                  class_chunk=chunk)
    prepared = predictor.prepare(paths)
    if decoded_only is not None:  # as if some images had failed to decode
        prepared = prepared.part(*decoded_only)
    accumulator = BlendAccumulator(len(paths), CLASSES, blend)
    per_member = {m: np.zeros((len(paths), CLASSES)) for m in range(len(members))}
    units = rank_units([(m.name, m.weight, m.tta) for m in members])
    predictor.predict(prepared, set(units), accumulator, per_member=per_member)
    return predictor, prepared, accumulator, per_member


def _activate(logits: torch.Tensor, activation: str) -> np.ndarray:
    out = {"softmax": lambda t: t.softmax(1), "sigmoid": torch.sigmoid,
           "none": lambda t: t}[activation](logits)
    return out.double().numpy()


def _combine(views: list[np.ndarray], mode: str) -> np.ndarray:
    stacked = np.stack(views)
    if mode == "max":
        return stacked.max(0)
    if mode == "gmean":
        return np.exp(np.log(np.clip(stacked, BLEND_EPS, 1)).mean(0))
    return stacked.mean(0)


def _reference(members, x, tta, blend, tta_blend):
    """Plain torch + numpy: every member's full rows, views combined, then blended."""
    total, weights, each = 0.0, 0.0, []
    with torch.no_grad():
        for member in members:
            views = []
            for op in tta:
                view = x.flip(-1) if op == "hflip" else x
                logits = (_reference_logits(member.model, view) if member.name.startswith("proto")
                          else member.model(view))
                views.append(_activate(logits.float(), member.activation))
            combined = _combine(views, tta_blend)
            each.append(combined)
            shifted = _combine([v - member.threshold_shift for v in views], tta_blend)
            part = (np.log(np.clip(shifted, BLEND_EPS, 1)) if blend == "gmean" else shifted)
            total, weights = total + member.weight * part, weights + member.weight
    blended = total / weights
    return (np.exp(blended) if blend == "gmean" else blended), each


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
@pytest.mark.parametrize(("activation", "blend", "tta_blend", "chunk"), [
    ("softmax", "gmean", "mean", 5), ("softmax", "mean", "gmean", 8),
    ("softmax", "mean", "max", 1), ("sigmoid", "mean", "mean", 7),
    ("none", "mean", "mean", 22)])
def test_chunked_blend_equals_full_rows(digit_tensors, metric, activation, blend, tta_blend,
                                        chunk):
    tta = ["identity", "hflip"]
    members = _members(metric, activation, tta)
    predictor, prepared, accumulator, per_member = _run(members, digit_tensors, chunk, blend,
                                                        tta_blend)
    assert predictor.chunked == [True, True, False]
    x = torch.stack(prepared.tensors[PREPROCESS])
    expected, each = _reference(members, x, tta, blend, tta_blend)
    np.testing.assert_allclose(accumulator.result(), expected, rtol=2e-5, atol=1e-7)
    for m, probs in enumerate(each):
        np.testing.assert_allclose(per_member[m], probs, rtol=2e-5, atol=1e-7)
    # and the same as scoring every class at once through the models' forward
    _, _, unchunked, _ = _run(members, digit_tensors, 0, blend, tta_blend)
    np.testing.assert_allclose(accumulator.result(), unchunked.result(), rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("head", [TestPrototypeHead, _runtime_head], ids=["test", "runtime"])
@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
def test_chunked_topk_submission_equals_full_rows(digit_tensors, tmp_path, metric, head):
    members = _members(metric, "softmax", ["identity"], head)
    submission = read_schema(SubmissionSection, {"format": "topk", "k": 4}, "submission")
    written = []
    for chunk in (3, 0):
        _, _, accumulator, _ = _run(members, digit_tensors, chunk, "mean", "mean")
        path = tmp_path / f"chunk{chunk}.csv"
        with SubmissionWriter(path, submission, list(range(CLASSES))) as writer:
            writer.write([f"img{i}" for i in range(len(digit_tensors))], accumulator.result())
        written.append(path.read_text())
    x = torch.stack(_run(members, digit_tensors, 3, "mean", "mean")[1].tensors[PREPROCESS])
    expected, _ = _reference(members, x, ["identity"], "mean", "mean")
    best = np.argsort(-expected, axis=1, kind="stable")[:, :4]
    rows = written[0].splitlines()[1:]
    assert [row.split(",")[1].split() for row in rows] == [[str(c) for c in r] for r in best]
    assert written[0] == written[1]


def test_chunked_member_fills_only_the_rows_it_predicted(digit_tensors):
    members = _members("sqeuclidean", "softmax", ["identity"])
    _, _, accumulator, per_member = _run(members, digit_tensors, 4, "mean", "mean",
                                         decoded_only=(1, 4))
    assert accumulator.row_weight.tolist() == [0, 4.5, 4.5, 4.5, 0]
    assert not per_member[0][[0, 4]].any() and per_member[0][1:4].sum(1) == pytest.approx(1)


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
def test_runtime_prototype_head_chunked_equals_reference(digit_tensors, metric):
    """The runtime's PrototypeNet (fp16 prototypes) through the chunked path, gmean blend."""
    tta = ["identity", "hflip"]
    members = _members(metric, "softmax", tta, _runtime_head)
    predictor, prepared, accumulator, _ = _run(members, digit_tensors, 6, "gmean", "mean")
    assert predictor.chunked == [True, True, False]
    expected, _ = _reference(members, torch.stack(prepared.tensors[PREPROCESS]), tta, "gmean",
                             "mean")
    np.testing.assert_allclose(accumulator.result(), expected, rtol=2e-5, atol=1e-7)


def test_timed_members_are_scored_in_their_turn_with_the_same_numbers(digit_tensors):
    """The probe times each member: a chunked member is then scored at once, within its time."""
    members = _members("cosine", "softmax", ["identity"])
    predictor, prepared, deferred, _ = _run(members, digit_tensors, 4, "gmean", "mean")
    timed = BlendAccumulator(len(digit_tensors), CLASSES, "gmean")
    timings = {}
    predictor.predict(prepared, set(rank_units([(m.name, m.weight, m.tta) for m in members])),
                      timed, timings)
    assert sorted(timings) == [0, 1, 2]
    np.testing.assert_allclose(timed.result(), deferred.result(), rtol=1e-12)
