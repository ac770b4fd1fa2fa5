"""Seeded random-crop TTA: `random_crop:SxN` is N views of S x S pixels whose positions come from
fixed seeds, the same in every run and every process, so a 2019 "random" TTA is reproducible
and parity-checkable (the kernel against `kernelpack predict`: tests/test_custom_transform.py).
Positions are checked against the documented rule written out here with Python's `random`."""

import copy
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inference_core.budget import rank_units
from inference_core.config import EnsembleConfig, expand_tta_op
from inference_core.errors import ConfigError, KernelError
from inference_core.tta import random_crop_box, run_tta, split_tta_outputs, tta_batch

CONFIG = {"models": [{"name": "a"}, {"name": "b", "tta": ["hflip"]}],
          "test": {"images": "test"}, "submission": {"format": "probabilities"}}


def _box(size, index, height, width):
    """The documented rule: u, v from random.Random(index); top = floor(u * (H - S + 1))."""
    draw = random.Random(index)
    u, v = draw.random(), draw.random()
    return int(u * (height - size + 1)), int(v * (width - size + 1)), size, size


def test_random_crop_sxn_is_n_views_each_a_unit_of_the_plan():
    config = EnsembleConfig.from_dict({**copy.deepcopy(CONFIG),
                                       "tta": ["identity", "random_crop:24x3", "hflip"]})
    assert config.tta == ("identity", "random_crop:24#0", "random_crop:24#1", "random_crop:24#2",
                          "hflip")
    members = [("a", 1.0, config.tta, "a", None),
               ("b", 1.0, config.models[1].tta, "b", None)]
    units = rank_units(members)
    assert len(units) == 5 + 1
    assert [u.label for u in units if u.member == 0] == [
        "a:identity", "a:random_crop:24#0", "a:random_crop:24#1", "a:random_crop:24#2", "a:hflip"]
    # One view of a crop may be listed on its own, and then not again.
    assert expand_tta_op("random_crop:24#7") == expand_tta_op("random_crop:024#07") == \
        ["random_crop:24#7"]
    with pytest.raises(ConfigError, match=r"tta\[1\]: 'random_crop:24#1' is listed twice"):
        EnsembleConfig.from_dict({**copy.deepcopy(CONFIG),
                                  "tta": ["random_crop:024#1", "random_crop:24x2"]})


@pytest.mark.parametrize("op", ["random_crop:24", "random_crop:0x3", "random_crop:24x0",
                                "random_crop:24x65", "random_crop:ax3", "random_crop:24x3.5",
                                "random_crop:24#-1", "random_crop:5000x2"])
def test_a_bad_random_crop_is_one_line_with_an_example(op):
    with pytest.raises(ConfigError) as error:
        EnsembleConfig.from_dict({**copy.deepcopy(CONFIG), "tta": [op]})
    message = str(error.value)
    assert message.startswith("tta[0]: random_crop needs a crop side in pixels")
    assert "e.g. random_crop:288x4" in message and "\n" not in message


def test_crops_follow_the_documented_seeds_inside_the_input_and_differ():
    for height, width in [(40, 40), (37, 61), (24, 24)]:
        boxes = [random_crop_box(24, i, height, width) for i in range(8)]
        assert boxes == [_box(24, i, height, width) for i in range(8)]
        assert all(0 <= top <= height - 24 and 0 <= left <= width - 24
                   for top, left, _, _ in boxes)
    assert len({random_crop_box(24, i, 64, 64) for i in range(8)}) == 8


def test_the_same_crops_in_a_fresh_interpreter_with_another_hash_seed():
    here = [random_crop_box(32, i, 300, 417) for i in range(4)]
    code = ("from inference_core.tta import random_crop_box; "
            "print([random_crop_box(32, i, 300, 417) for i in range(4)])")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "12345", "PATH": ""},
                           cwd=str(Path(__file__).parent.parent))
    assert there.stdout.strip() == str(here)


def test_views_are_the_crops_as_they_are_not_resized():
    images = torch.randn(2, 3, 30, 41, generator=torch.Generator().manual_seed(0))
    ops = ["identity", "random_crop:16#0", "random_crop:16#1"]
    passes = []

    def network(batch):
        passes.append(tuple(batch.shape))
        return batch.mean(dim=(2, 3))  # class scores: one per channel

    outputs = run_tta(network, images, ops)
    assert passes == [(2, 3, 30, 41), (4, 3, 16, 16)]  # the crops share one pass
    for op, output in zip(ops[1:], outputs[1:], strict=True):
        top, left, h, w = _box(16, int(op[-1]), 30, 41)
        torch.testing.assert_close(output, images[:, :, top:top + h, left:left + w].mean((2, 3)))
    assert not torch.equal(outputs[1], outputs[2])


def test_too_small_an_input_and_spatial_outputs_are_refused_in_one_line():
    with pytest.raises(KernelError) as error:
        tta_batch(torch.zeros(1, 3, 20, 40), ["random_crop:24#0"])
    assert str(error.value) == (
        "TTA view random_crop:24#0 needs a model input of at least 24 x 24 pixels, got 20 x 40; "
        "resize to at least 24 in the preprocessing (e.g. resize shortest 24) or crop smaller")
    with pytest.raises(ValueError, match="saw only part of the image"):
        split_tta_outputs(torch.zeros(1, 3, 24, 24), ["random_crop:24#0"])


def _flipped(index):
    """The documented coin: the third number random.Random(index) draws is below 0.5."""
    draw = random.Random(index)
    draw.random(), draw.random()
    return draw.random() < 0.5


def test_random_crop_hflip_is_torchvisions_random_crop_then_random_flip_with_seeded_draws():
    from PIL import Image
    from torchvision.transforms import functional as TF

    config = EnsembleConfig.from_dict({**copy.deepcopy(CONFIG),
                                       "tta": ["random_crop_hflip:16x8", "random_crop:16#0"]})
    assert config.tta[:2] == ("random_crop_hflip:16#0", "random_crop_hflip:16#1")
    assert len(config.tta) == 9
    coins = [_flipped(i) for i in range(8)]
    assert any(coins) and not all(coins)  # both kinds of view occur among 8
    # The reference: torchvision's own crop and flip of the PIL image, then its tensor transform.
    generator = torch.Generator().manual_seed(1)
    pixels = (torch.rand(30, 41, 3, generator=generator) * 255).to(torch.uint8).numpy()
    image = Image.fromarray(pixels)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    prepared = TF.normalize(TF.to_tensor(image), mean, std)[None]
    ops = list(config.tta)
    views = [tta_batch(prepared, [op]) for op in ops]
    for index in range(8):
        top, left, h, w = _box(16, index, 30, 41)
        crop = TF.crop(image, top, left, h, w)
        expected = TF.normalize(TF.to_tensor(TF.hflip(crop) if coins[index] else crop), mean, std)
        torch.testing.assert_close(views[index][0], expected)
    # The same positions as random_crop's: only the mirror differs.
    assert torch.equal(views[0] if not coins[0] else views[0].flip(-1), views[8])


def test_a_bad_random_crop_hflip_is_one_line_naming_it():
    with pytest.raises(ConfigError) as error:
        EnsembleConfig.from_dict({**copy.deepcopy(CONFIG), "tta": ["random_crop_hflip:24"]})
    assert str(error.value).startswith("tta[0]: random_crop_hflip needs a crop side in pixels")
    assert "e.g. random_crop_hflip:288x4" in str(error.value)
    with pytest.raises(KernelError, match=r"^TTA view random_crop_hflip:24#0 needs a model input"):
        tta_batch(torch.zeros(1, 3, 20, 40), ["random_crop_hflip:24#0"])
