import pytest
import torch

from inference_core.tta import TTA_OPS, run_tta, split_tta_outputs, tta_batch

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
