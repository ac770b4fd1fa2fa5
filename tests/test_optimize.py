"""Exact per-model optimisations (BatchNorm folding, channels-last): equal to the model's own
eager outputs on real images, and each step left out, with a log line, where it cannot apply."""

import copy
import re
import time

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn

from inference_core.blend import BlendAccumulator
from inference_core.budget import rank_units
from inference_core.config import EnsembleConfig
from inference_core.errors import ConfigError
from inference_core.model_factory import create_model
from inference_core.optimize import (
    COMPILE_PASSES,
    COMPILE_SECONDS_GUESS,
    compile_pays_back,
    optimize_model,
)
from inference_core.predict import EnsemblePredictor, Member
from inference_core.preprocess import Preprocess
from inference_core.runner import run_kernel

TTA = ["identity", "hflip", "scale:1.25"]  # the scale view runs the model at a second size


def _trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine terms, as a trained model has (a fresh BatchNorm
    is the identity, which folding would pass whatever it did)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.2)
    return model.eval()


@pytest.fixture
def digit_images(tmp_path):
    """Real handwritten digits saved as PNG, square and non-square (two keep_aspect shapes)."""
    digits = load_digits().images
    paths = []
    for i in range(8):
        grey = np.rint(digits[i] * (255 / 16)).astype(np.uint8)
        size = (48, 48) if i % 2 else (72, 40)
        image = Image.fromarray(grey).resize(size, Image.Resampling.BILINEAR).convert("RGB")
        path = tmp_path / f"digit_{i}.png"
        image.save(path)
        paths.append(path)
    return paths


def _member(name: str, model: nn.Module, tta=TTA) -> Member:
    preprocess = Preprocess.from_checkpoint_config(
        {"input_size": 32, "resize": "keep_aspect", "mean": [0.5] * 3, "std": [0.25] * 3}, name)
    return Member(name, model, preprocess, 1.0, 0.0, list(tta), "softmax", 10, None)


def _eager_probabilities(model: nn.Module, tensors: list[torch.Tensor]) -> np.ndarray:
    """The reference: the unoptimised model on each image alone, its views by plain torch
    (flip; bilinear resize to 1.25x), softmax, mean over views."""
    rows = []
    with torch.inference_mode():
        for x in tensors:
            x = x[None]
            height, width = x.shape[-2:]
            views = [x, x.flip(-1), F.interpolate(x, size=(round(1.25 * height),
                                                          round(1.25 * width)),
                                                  mode="bilinear", align_corners=False)]
            rows.append(np.mean([model(v).softmax(1)[0].numpy() for v in views], axis=0))
    return np.stack(rows)


def _optimised_probabilities(predictor: EnsemblePredictor, paths) -> tuple[np.ndarray, list]:
    prepared = predictor.prepare(paths)
    lines: list[str] = []
    predictor.optimize(prepared.part(0, 4), lines.append)
    member = predictor.members[0]
    out = {0: np.zeros((len(paths), 10), dtype=np.float32)}
    predictor.predict(prepared, set(rank_units([(member.name, 1.0, member.tta)])),
                      BlendAccumulator(len(paths), 10, "mean"), per_member=out)
    return out[0], lines


def test_a_folded_channels_last_model_equals_its_eager_self_on_real_images(digit_images):
    torch.manual_seed(0)
    model = _trained_like(create_model("small_cnn", num_classes=10, width=8))
    eager = copy.deepcopy(model)
    predictor = EnsemblePredictor([_member("cnn", model)], "fp32", [torch.device("cpu")])
    tensors = predictor.prepare(digit_images).tensors[predictor.members[0].preprocess]
    assert len({tuple(t.shape) for t in tensors}) == 2  # keep_aspect: two input shapes

    optimised, lines = _optimised_probabilities(predictor, digit_images)

    member = predictor.members[0]
    assert isinstance(member.model, torch.fx.GraphModule)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in member.model.modules())  # all folded
    assert predictor.channels_last == [True]
    assert member.model.get_submodule("features.0.0").weight.is_contiguous(
        memory_format=torch.channels_last)
    assert lines[0].startswith("optimise cnn: fold, channels-last; max difference")
    # The four images after the check batch were never seen by the check.
    assert np.abs(optimised - _eager_probabilities(eager, tensors)).max() <= 1e-4


class GatedNet(nn.Module):
    """A user's model with control flow on tensor values: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        if x.sum() > 0:
            x = x * 2.0
        return self.head(x.mean((2, 3)))


def test_a_model_that_cannot_be_traced_runs_unfolded_with_a_log_line(digit_images):
    torch.manual_seed(1)
    model = _trained_like(GatedNet())
    eager = copy.deepcopy(model)
    predictor = EnsemblePredictor([_member("gated", model)], "fp32", [torch.device("cpu")])
    tensors = predictor.prepare(digit_images).tensors[predictor.members[0].preprocess]

    optimised, lines = _optimised_probabilities(predictor, digit_images)

    assert predictor.members[0].model is model  # the user's own module, not an fx copy
    assert isinstance(model.bn, nn.BatchNorm2d)
    assert len(lines) == 1 and lines[0].startswith("optimise gated: channels-last;")
    assert "fold left out (TraceError: symbolically traced variables cannot be used as " \
           "inputs to control flow)" in lines[0]
    assert np.abs(optimised - _eager_probabilities(eager, tensors)).max() <= 1e-4


class FlattenByView(nn.Module):
    """`.view` on a convolution's output needs NCHW strides: channels-last cannot run it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=8, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.head(x.view(x.size(0), -1))


def test_a_model_that_needs_nchw_runs_folded_without_channels_last(digit_images):
    torch.manual_seed(2)
    model = _trained_like(FlattenByView())
    eager = copy.deepcopy(model)
    predictor = EnsemblePredictor([_member("view", model)], "fp32", [torch.device("cpu")])
    tensors = predictor.prepare(digit_images).tensors[predictor.members[0].preprocess]

    optimised, lines = _optimised_probabilities(predictor, digit_images)

    folded = predictor.members[0].model
    assert isinstance(folded, torch.fx.GraphModule) and predictor.channels_last == [False]
    assert folded.get_submodule("conv").weight.is_contiguous()  # put back in NCHW
    assert lines[0].startswith("optimise view: fold;")
    assert "channels-last left out (RuntimeError: view size is not compatible" in lines[0]
    assert np.abs(optimised - _eager_probabilities(eager, tensors)).max() <= 1e-4


def test_a_step_whose_outputs_differ_beyond_the_tolerance_is_left_out():
    torch.manual_seed(3)
    model = _trained_like(create_model("small_cnn", num_classes=10, width=8))
    images = torch.rand(4, 3, 32, 32)

    def run(candidate, channels_last):
        x = images.contiguous(memory_format=torch.channels_last) if channels_last else images
        with torch.inference_mode():
            return [candidate(x).softmax(1)]

    # Folding rounds differently (about 1e-7 here): a zero tolerance refuses it.
    strict = optimize_model(model, run, tolerance=0.0)
    assert "fold" not in strict.steps and strict.model is model
    assert any(note.startswith("fold left out (outputs differ by") for note in strict.notes)
    loose = optimize_model(model, run, tolerance=1e-4)
    assert loose.steps == ["fold", "channels-last"] and 0 < loose.max_difference <= 1e-4


def test_compile_is_tried_only_where_the_remaining_work_pays_it_back(digit_images):
    cost = COMPILE_SECONDS_GUESS * COMPILE_PASSES
    assert not compile_pays_back(projected_seconds=600, seconds_left=30_000)  # a rehearsal set
    assert compile_pays_back(projected_seconds=20 * cost, seconds_left=30_000)  # a long test set
    assert not compile_pays_back(projected_seconds=20 * cost, seconds_left=5 * cost)  # no time
    # compile: auto on a short test set: measured, not tried, said in the log.
    torch.manual_seed(4)
    predictor = EnsemblePredictor(
        [_member("cnn", _trained_like(create_model("small_cnn", num_classes=10, width=4)))],
        "fp32", [torch.device("cpu")], compile_mode="auto")
    lines: list[str] = []
    predictor.optimize(predictor.prepare(digit_images[:4]), lines.append, images_left=100,
                       seconds_left=32_400)
    assert re.search(r"; compile not tried \(projected \d+ s of forward passes would not pay "
                     r"back about \d+ s of compiling\)$", lines[0])
    assert not isinstance(predictor.members[0].model, torch._dynamo.eval_frame.OptimizedModule)


def test_compile_is_off_by_default_and_auto_or_off_only():
    base = {"models": [{"name": "m"}], "test": {"images": "test"},
            "submission": {"format": "multiclass"}}
    assert EnsembleConfig.from_dict(base).compile == "off"
    assert EnsembleConfig.from_dict({**base, "compile": "auto"}).compile == "auto"
    with pytest.raises(ConfigError, match="compile"):
        EnsembleConfig.from_dict({**base, "compile": "yes"})


def test_the_kernel_optimises_before_the_probe_is_timed_and_plans_with_it(digits_input,
                                                                           tmp_path):
    config = {"models": [{"name": "cnn_f0"}, {"name": "cnn_f1"}],
              "input_roots": [str(digits_input)],
              "test": {"images": "digits/test",
                       "sample_submission": "digits/sample_submission.csv"},
              "submission": {"format": "probabilities"}, "tta": ["identity", "hflip"],
              "batch_size": 16}
    lines: list[str] = []
    summary = run_kernel(EnsembleConfig.from_dict(config), working_dir=tmp_path,
                         log=lines.append, progress=False)
    optimise = [i for i, line in enumerate(lines) if line.startswith("optimise ")]
    plan = next(i for i, line in enumerate(lines) if line.startswith("plan: "))
    assert len(optimise) == 2 and max(optimise) < plan
    assert all(lines[i].split(": ", 1)[1].startswith("fold, channels-last;") for i in optimise)
    assert summary.fallback_rows == 0  # the check batch's outputs are its predictions
    rows = pd.read_csv(summary.submission).set_index("id")
    assert len(rows) == summary.rows and np.allclose(rows.sum(axis=1), 1.0, atol=1e-5)


def test_a_model_whose_check_does_not_fit_before_the_deadline_runs_as_loaded(digit_images):
    torch.manual_seed(5)
    model = _trained_like(create_model("small_cnn", num_classes=10, width=8))
    predictor = EnsemblePredictor([_member("cnn", model)], "fp32", [torch.device("cpu")])
    check = predictor.prepare(digit_images[:4])
    accumulator = BlendAccumulator(4, 10, "mean")
    lines: list[str] = []
    predictor.optimize(check, lines.append, accumulator=accumulator, deadline=time.monotonic())
    assert re.fullmatch(r"optimise cnn: skipped, the check would take about \d+\.\d s of the "
                        r"0\.0 s left before the deadline; runs as loaded", lines[0])
    assert predictor.members[0].model is model and not predictor.channels_last[0]
    assert (accumulator.row_weight > 0).all()  # its unoptimised outputs are still predictions
    # With the time to check it, the same model is optimised.
    predictor.optimize(check, lines.append, deadline=time.monotonic() + 3600)
    assert lines[1].startswith("optimise cnn: fold, channels-last;")
