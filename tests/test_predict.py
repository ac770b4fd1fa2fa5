import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from inference_core import decode
from inference_core.blend import BlendAccumulator
from inference_core.budget import rank_units
from inference_core.model_factory import create_model
from inference_core.predict import EnsemblePredictor, Member, prefetch
from inference_core.preprocess import Preprocess


def _member(name, size, weight=1.0, tta=("identity",)):
    torch.manual_seed(len(name) + size)
    return Member(name, create_model("small_cnn", num_classes=4, width=4).eval(),
                  Preprocess(size, "stretch", (0.5,) * 3, (0.25,) * 3), weight, 0.0, list(tta),
                  "softmax", 4, None)


@pytest.fixture
def images(tmp_path):
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((20, 30, 3), 40 * i, dtype=np.uint8)).save(path)
        paths.append(path)
    (tmp_path / "bad.png").write_bytes(b"garbage")
    return [*paths[:2], tmp_path / "bad.png", *paths[2:]]


def test_each_image_is_decoded_once_for_all_models_and_groups(images, monkeypatch):
    calls = []
    real = decode.decode_image
    monkeypatch.setattr("inference_core.predict.decode_image",
                        lambda path, *decoder: calls.append((path, *decoder)) or real(path))
    members = [_member("a", 32), _member("b", 32), _member("c", 48)]
    predictor = EnsemblePredictor(members)
    prepared = predictor.prepare(images)
    assert calls == [(path, "pil", None) for path in images]  # exact decoding, once per image
    assert prepared.decoded.tolist() == [0, 1, 3, 4, 5]
    assert len(prepared.errors) == 1 and "bad.png: cannot decode image" in prepared.errors[0]
    assert {p.input_size: len(t) for p, t in prepared.tensors.items()} == {32: 5, 48: 5}


def test_predict_blends_every_active_unit_and_skips_undecoded_rows(images):
    members = [_member("a", 32, 2.0, ("identity", "hflip")), _member("b", 48)]
    predictor = EnsemblePredictor(members)
    prepared = predictor.prepare(images)
    accumulator = BlendAccumulator(len(images), 4, "mean")
    timings = {}
    predictor.predict(prepared, set(rank_units([("a", 2.0, ["identity", "hflip"]),
                                                ("b", 1.0, ["identity"])])), accumulator, timings)
    assert accumulator.row_weight.tolist() == [3, 3, 0, 3, 3, 3]
    assert sorted(timings) == [0, 1]
    # the same numbers as running each model by hand
    with torch.inference_mode():
        x32 = torch.stack(prepared.tensors[members[0].preprocess])
        x48 = torch.stack(prepared.tensors[members[1].preprocess])
        a = members[0].model(x32).softmax(1) + members[0].model(x32.flip(-1)).softmax(1)
        b = members[1].model(x48).softmax(1)
    expected = (a.numpy() + b.numpy()) / 3
    np.testing.assert_allclose(accumulator.result(prepared.decoded), expected, rtol=1e-5)


def test_a_member_with_non_finite_outputs_is_left_out_of_the_blend_for_those_images(images):
    good, broken = _member("good", 32), _member("broken", 32)
    with torch.no_grad():
        for parameter in broken.model.parameters():
            parameter.fill_(float("nan"))
    predictor = EnsemblePredictor([good, broken])
    prepared = predictor.prepare(images)
    accumulator = BlendAccumulator(len(images), 4, "gmean")
    units = rank_units([("good", 1.0, ["identity"]), ("broken", 1.0, ["identity"])])
    predictor.predict(prepared, set(units), accumulator)
    assert accumulator.row_weight.tolist() == [1, 1, 0, 1, 1, 1]  # the good member's only
    with torch.inference_mode():
        expected = good.model(torch.stack(prepared.tensors[good.preprocess])).softmax(1)
    np.testing.assert_allclose(accumulator.result(prepared.decoded), expected.numpy(),
                               rtol=1e-5)
    reported: set[str] = set()
    assert predictor.newly_left_out(reported) == ["broken"]
    assert predictor.newly_left_out(reported) == []  # named once
    assert predictor.left_out_summary() == ("left out of the blend for non-finite outputs: "
                                            "broken (5 images)")


def test_prefetch_keeps_order_and_works_ahead_in_threads():
    seen = []

    def work(item):
        seen.append((item, threading.current_thread().name))
        time.sleep(0.01 * (3 - item % 3))  # later items finish first
        return item * 10

    assert list(prefetch(range(7), work, threads=2)) == [(i, i * 10) for i in range(7)]
    assert all(name.startswith("loader") for _, name in seen)
    assert list(prefetch(range(3), work, threads=0)) == [(0, 0), (1, 10), (2, 20)]
