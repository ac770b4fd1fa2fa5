import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from inference_core.blend import BlendAccumulator
from inference_core.budget import rank_units
from inference_core.config import TTA_CROP_OPS, TTA_OP_NAMES, EnsembleConfig
from inference_core.predict import EnsemblePredictor, Member
from inference_core.preprocess import Preprocess
from inference_core.tta import TTA_OPS, run_tta, split_tta_outputs, tta_batch, tta_op

ALL_OPS = list(TTA_OPS)


@pytest.fixture
def images():
    # Non-square, so rot90/transpose change the shape and a wrong undo cannot pass by accident.
    return torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)


def test_views_are_concatenated_op_after_op(images):
    batch = tta_batch(images, ["identity", "hflip", "vflip"])
    assert batch.shape == (6, 3, 4, 6)
    assert torch.equal(batch[:2], images)
    assert torch.equal(batch[2:4, :, :, 0], images[:, :, :, -1])  # first column <- last column
    assert torch.equal(batch[4:6, :, 0, :], images[:, :, -1, :])  # first row <- last row


@pytest.mark.parametrize("op", ALL_OPS)
def test_spatial_outputs_are_undone_back_to_the_input_frame(images, op):
    outputs = tta_batch(images, [op])  # an identity network: outputs are the views themselves
    (undone,) = split_tta_outputs(outputs, [op])
    assert torch.equal(undone, images)


def test_run_tta_lines_up_all_views_of_a_non_square_batch_in_two_passes(images):
    passes = []

    def identity_network(batch):
        passes.append(tuple(batch.shape))
        return batch

    views = run_tta(identity_network, images, ALL_OPS)
    assert len(views) == len(ALL_OPS)
    for view in views:
        assert torch.equal(view, images)
    assert passes == [(2 * 4, 3, 4, 6), (2 * 3, 3, 6, 4)]


def test_views_of_different_shapes_cannot_share_one_batch(images):
    with pytest.raises(ValueError, match="use run_tta"):
        tta_batch(images, ["identity", "rot90"])


def test_every_view_the_config_accepts_has_an_implementation(images):
    """The config names the views (without torch), `tta` implements them: the two agree."""
    ops = [*TTA_OP_NAMES, *(f"{kind}:0.5" for kind in TTA_CROP_OPS), "scale:1.5"]
    config = EnsembleConfig.from_dict({"models": [{"name": "m"}], "test": {"images": "t"},
                                       "submission": {"format": "multiclass"}, "tta": ops})
    assert config.tta == tuple(ops)
    assert list(TTA_OPS) == list(TTA_OP_NAMES)
    for op in ops:
        apply, _ = tta_op(op)
        assert apply(images).shape[:2] == images.shape[:2], op


def test_rotations_and_transpose_are_the_geometry_they_name():
    image = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    expected = {
        "hflip": [[2, 1], [4, 3]],
        "vflip": [[3, 4], [1, 2]],
        "rot90": [[2, 4], [1, 3]],  # counter-clockwise
        "rot180": [[4, 3], [2, 1]],
        "rot270": [[3, 1], [4, 2]],
        "transpose": [[1, 3], [2, 4]],
    }
    for op, grid in expected.items():
        assert tta_batch(image, [op])[0, 0].tolist() == grid, op


def test_class_scores_come_back_one_block_per_view(images):
    # A position-sensitive "classifier": its score is the top-left pixel of channel 0.
    scores = tta_batch(images, ["identity", "hflip"])[:, 0, 0, 0:1]
    identity, hflip = split_tta_outputs(scores, ["identity", "hflip"])
    assert torch.equal(identity[:, 0], images[:, 0, 0, 0])
    assert torch.equal(hflip[:, 0], images[:, 0, 0, -1])


def _bilinear(x, height, width, antialias=False):
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False,
                         antialias=antialias)


# (top, left) of the 3 x 4 box that each crop keeps of a 6 x 8 input at F = 0.5.
CROP_CORNERS = {"center_crop": (1, 2), "crop_tl": (0, 0), "crop_tr": (0, 4), "crop_bl": (3, 0),
                "crop_br": (3, 4)}


@pytest.mark.parametrize("op", sorted(CROP_CORNERS))
def test_a_crop_is_the_documented_box_resized_back_to_the_input_size(op):
    images = torch.randn(2, 3, 6, 8, generator=torch.Generator().manual_seed(0))
    top, left = CROP_CORNERS[op]
    expected = _bilinear(images[..., top:top + 3, left:left + 4], 6, 8)
    view = tta_batch(images, [f"{op}:0.5"])
    assert view.shape == images.shape
    torch.testing.assert_close(view, expected, rtol=0, atol=1e-6)


def test_each_corner_crop_sees_its_own_corner():
    # Quadrants of constant values: a corner crop of half of each side sees one value only.
    image = torch.zeros(1, 1, 8, 8)
    image[..., :4, :4], image[..., :4, 4:], image[..., 4:, :4], image[..., 4:, 4:] = 1, 2, 3, 4
    image[..., 2:6, 2:6] = torch.where(image[..., 2:6, 2:6] > 0, image[..., 2:6, 2:6], 0)
    for op, value in {"crop_tl": 1, "crop_tr": 2, "crop_bl": 3, "crop_br": 4}.items():
        assert torch.all(tta_batch(image, [f"{op}:0.5"]) == value), op
    centre = torch.zeros(1, 1, 8, 8)
    centre[..., 2:6, 2:6] = 5
    assert torch.all(tta_batch(centre, ["center_crop:0.5"]) == 5)


def test_scale_resizes_the_whole_input_and_undoes_on_spatial_outputs():
    images = torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(1))
    up = tta_batch(images, ["scale:1.5"])
    torch.testing.assert_close(up, _bilinear(images, 6, 9), rtol=0, atol=1e-6)
    down = tta_batch(images, ["scale:0.5"])
    torch.testing.assert_close(down, _bilinear(images, 2, 3, antialias=True), rtol=0, atol=1e-6)
    (undone,) = split_tta_outputs(up, ["scale:1.5"])  # an identity network
    assert undone.shape == images.shape


def test_a_crop_cannot_be_undone_on_spatial_outputs(images):
    with pytest.raises(ValueError, match=r"center_crop:0\.5 saw only part of the image"):
        split_tta_outputs(tta_batch(images, ["center_crop:0.5"]), ["center_crop:0.5"])


def test_run_tta_runs_one_pass_per_view_shape(images):
    passes = []

    def pooled_network(batch):
        passes.append(tuple(batch.shape))
        return batch.mean(dim=(2, 3))  # class scores: no undo needed

    ops = ["identity", "hflip", "scale:1.5", "center_crop:0.75", "rot90"]
    views = run_tta(pooled_network, images, ops)
    assert passes == [(6, 3, 4, 6), (2, 3, 6, 9), (2, 3, 6, 4)]
    torch.testing.assert_close(views[1], images.mean(dim=(2, 3)))
    torch.testing.assert_close(views[3], _bilinear(images[..., 0:3, 1:5], 4, 6).mean(dim=(2, 3)))


# Two tiny models, three views each, combined per level; the reference below is plain torch.
VIEWS = ["identity", "hflip", "center_crop:0.75"]


@pytest.fixture
def two_models(tmp_path):
    preprocess = Preprocess.from_checkpoint_config(
        {"input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}, "tiny")
    members = []
    for i, (weight, shift) in enumerate([(2.0, 0.0), (1.0, 0.02)]):
        torch.manual_seed(10 + i)
        # Position-sensitive (a linear layer over 8 x 8 pooled pixels), so every view differs.
        model = nn.Sequential(nn.AvgPool2d(4), nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).eval()
        with torch.no_grad():  # confident outputs: the combining modes differ clearly
            model[2].weight.mul_(4.0)
        members.append(Member(f"m{i}", model, preprocess, weight, shift, list(VIEWS), "softmax",
                              5, None, group=f"m{i}"))
    paths = []
    for i in range(6):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    return members, paths


def _reference_views(model, x):
    """The three views by hand: the image, its mirror, the central 24 x 24 resized to 32 x 32."""
    with torch.no_grad():
        crop = F.interpolate(x[..., 4:28, 4:28], size=(32, 32), mode="bilinear",
                             align_corners=False)
        return [model(v).softmax(1).double().numpy() for v in (x, x.flip(-1), crop)]


def _reference_blend(members, x, tta_blend, blend):
    eps = 1e-7
    per_model = []
    for member in members:
        views = np.stack(_reference_views(member.model, x)) - member.threshold_shift
        if tta_blend == "max":
            per_model.append(views.max(0))
        elif tta_blend == "mean":
            per_model.append(views.mean(0))
        else:
            per_model.append(np.exp(np.log(np.clip(views, eps, 1)).mean(0)))
    weights = np.array([m.weight for m in members])[:, None, None]
    if blend == "mean":
        return (weights * np.stack(per_model)).sum(0) / weights.sum()
    return np.exp((weights * np.log(np.clip(np.stack(per_model), eps, 1))).sum(0) / weights.sum())


@pytest.mark.parametrize("tta_blend, blend", [("max", "gmean"), ("mean", "gmean"),
                                              ("gmean", "mean"), ("max", "mean")])
def test_views_then_models_are_combined_as_configured(two_models, tta_blend, blend):
    members, paths = two_models
    predictor = EnsemblePredictor(members, "fp32", tta_blend=tta_blend)
    prepared = predictor.prepare(paths)
    accumulator = BlendAccumulator(len(paths), 5, blend)
    units = rank_units([(m.name, m.weight, m.tta) for m in members])
    predictor.predict(prepared, set(units), accumulator)
    x = torch.stack(prepared.tensors[members[0].preprocess])
    expected = _reference_blend(members, x, tta_blend, blend)
    np.testing.assert_allclose(accumulator.result(), expected, rtol=1e-5, atol=1e-7)
    # The levels matter: every other pairing gives other numbers.
    other = "mean" if tta_blend != "mean" else "max"
    assert np.abs(_reference_blend(members, x, other, blend) - expected).max() > 1e-3


@pytest.mark.parametrize("mode", ["mean", "gmean"])
def test_the_default_tta_blend_adds_up_to_every_view_at_weight_over_n(two_models, mode):
    """tta_blend = blend reproduces the runtime before per-level combining: each view went into
    the blend on its own, with weight w / n and the model's shift."""
    members, paths = two_models
    predictor = EnsemblePredictor(members, "fp32", tta_blend=mode)
    prepared = predictor.prepare(paths)
    accumulator = BlendAccumulator(len(paths), 5, mode)
    predictor.predict(prepared, set(rank_units([(m.name, m.weight, m.tta) for m in members])),
                      accumulator)
    x = torch.stack(prepared.tensors[members[0].preprocess])
    view_by_view = BlendAccumulator(len(paths), 5, mode)
    for member in members:
        for view in _reference_views(member.model, x):
            view_by_view.add(view, member.weight / len(VIEWS),
                             threshold_shift=member.threshold_shift)
    np.testing.assert_allclose(accumulator.result(), view_by_view.result(), rtol=1e-6)


def test_per_member_arrays_get_each_members_views_without_its_shift(two_models):
    members, paths = two_models
    predictor = EnsemblePredictor(members, "fp32", tta_blend="max")
    prepared = predictor.prepare(paths)
    per_member = {m: np.full((len(paths), 5), np.nan) for m in range(len(members))}
    predictor.predict(prepared, set(rank_units([(m.name, m.weight, m.tta) for m in members])),
                      BlendAccumulator(len(paths), 5, "gmean"), per_member=per_member)
    x = torch.stack(prepared.tensors[members[0].preprocess])
    for m, member in enumerate(members):
        np.testing.assert_allclose(per_member[m],
                                   np.stack(_reference_views(member.model, x)).max(0), rtol=1e-5)
