"""The built-in steps as a list (`preprocess.steps`): several resizes, crops and pads in order,
each case checked against a reference written here with plain PIL / cv2 / numpy, never with
inference_core; and the single-step fields still meaning what they did."""

import math

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from inference_core.decode import decode_image
from inference_core.errors import CheckpointError
from inference_core.preprocess import (
    CenterCropStep,
    PadStep,
    ResizeStep,
    validate_preprocess,
)
from inference_core.transforms import to_tensor

MEAN, STD = (0.5, 0.45, 0.4), (0.25, 0.2, 0.3)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 150 x 210 PNG with detail in it (height x width)."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:150, 0:210]
    pixels = np.stack([(x * 1.3) % 256, (y * 0.9) % 256, (x * y) % 256], -1).astype(np.uint8)
    pixels[::5] = rng.integers(0, 256, pixels[::5].shape, dtype=np.uint8)
    path = tmp_path_factory.mktemp("steps") / "photo.png"
    Image.fromarray(pixels).save(path)
    return path


def _ours(path, config):
    preprocess = validate_preprocess(config, "m.pt")
    return to_tensor(decode_image(path, *preprocess.decoder), preprocess)


def _normalised(array, mean=MEAN, std=STD):
    x = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 255.0
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def _same(ours, reference):
    assert ours.dtype == torch.float32 and ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)


def test_two_resizes_a_crop_and_a_pad_run_in_order(photo):
    # A grandmaster's pipeline, scaled down: longest side 120 (cv2 area), then longest 96 (PIL
    # bilinear), centre crop 64 x 80, pad to 72 x 80 with a colour.
    config = {"mean": list(MEAN), "std": list(STD), "preprocess": {"decode": "cv2", "steps": [
        {"resize": "longest", "size": 120, "interpolation": "area"},
        {"resize": "longest", "size": 96, "backend": "pil"},
        {"center_crop": [64, 80]},
        {"pad": [72, 80], "fill": [10, 20, 30]}]}}
    rgb = cv2.cvtColor(cv2.imread(str(photo), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    first = cv2.resize(rgb, (120, math.floor(150 * 120 / 210)), interpolation=cv2.INTER_AREA)
    assert first.shape == (85, 120, 3)
    second = np.array(Image.fromarray(first).resize((96, math.floor(85 * 96 / 120)),
                                                    Image.BILINEAR))
    assert second.shape == (68, 96, 3)
    top, left = round((68 - 64) / 2), round((96 - 80) / 2)
    cropped = second[top:top + 64, left:left + 80]
    padded = np.empty((72, 80, 3), np.uint8)
    padded[...] = (10, 20, 30)
    padded[4:68] = cropped  # 8 rows to add: 4 above, 4 below
    _same(_ours(photo, config), _normalised(padded))
    # Not vacuous: one resize straight to 96 gives other pixels.
    one_step = {**config, "preprocess": {"decode": "cv2", "steps": [
        {"resize": "longest", "size": 96, "backend": "pil"}, {"center_crop": [64, 80]},
        {"pad": [72, 80], "fill": [10, 20, 30]}]}}
    assert (_ours(photo, one_step) - _ours(photo, config)).abs().max() > 0.1


def test_shortest_then_a_larger_crop_pads_black_as_torchvision_does(photo):
    config = {"mean": list(MEAN), "std": list(STD), "preprocess": {"steps": [
        {"resize": "shortest", "size": 30, "interpolation": "bicubic"},
        {"center_crop": [36, 40]}]}}
    resized = np.array(Image.open(photo).convert("RGB").resize((42, 30), Image.BICUBIC))
    expected = np.zeros((36, 40, 3), np.uint8)
    expected[3:33] = resized[:, 1:41]  # 3 black rows each side; round((42 - 40) / 2) = 1
    _same(_ours(photo, config), _normalised(expected))


def test_no_steps_is_the_decoded_image_normalised(photo):
    config = {"mean": list(MEAN), "std": list(STD), "preprocess": {"steps": []}}
    _same(_ours(photo, config), _normalised(np.array(Image.open(photo).convert("RGB"))))


@pytest.mark.parametrize("legacy, steps", [
    ({"input_size": 48, "resize": "shortest", "preprocess": {"interpolation": "bicubic",
                                                             "crop_pct": 0.875}},
     [{"resize": "shortest", "size": 54, "interpolation": "bicubic"}, {"center_crop": 48}]),
    ({"input_size": 64, "resize": "longest", "preprocess": {"decode": "cv2", "pad": 64,
                                                            "pad_fill": 7}},
     [{"resize": "longest", "size": 64}, {"pad": 64, "fill": 7}]),
    ({"input_size": 64, "resize": "keep_aspect"}, [{"resize": "keep_aspect", "size": 64}]),
])
def test_the_single_step_fields_are_the_same_steps(photo, legacy, steps):
    decode = legacy.get("preprocess", {}).get("decode", "pil")
    listed = {"preprocess": {"decode": decode, "steps": steps}}
    old, new = validate_preprocess(legacy, "m"), validate_preprocess(listed, "m")
    assert old.pixel_steps == new.pixel_steps and old.describe() == new.describe()
    _same(_ours(photo, legacy), _ours(photo, listed))


def test_steps_are_typed_hashable_and_named_in_the_log():
    config = {"preprocess": {"decode": "cv2", "fast_jpeg": False, "steps": [
        {"resize": "longest", "size": 512, "interpolation": "area"},
        {"resize": "shortest", "size": 480, "multiple": 32, "rounding": "round"},
        {"center_crop": 448}, {"pad": [448, 480]}]}}
    preprocess = validate_preprocess(config, "m")
    assert preprocess.steps == (
        ResizeStep("longest", 512, "area", "cv2"),
        ResizeStep("shortest", 480, "bilinear", "cv2", 32, "round"),
        CenterCropStep(448, 448), PadStep(448, 480, (0, 0, 0)))
    assert preprocess == validate_preprocess(config, "other") and hash(preprocess)
    assert preprocess.describe() == (
        "cv2 decode, resize longest 512 area (cv2), resize shortest 480 bilinear (cv2) to a "
        "multiple of 32 (round), center crop 448x448, pad to 448x480 with [0, 0, 0], "
        "mean [0.485, 0.456, 0.406] std [0.229, 0.224, 0.225]")
    fast = validate_preprocess({"preprocess": {"fast_jpeg": True, "steps": [
        {"resize": "longest", "size": 320}, {"center_crop": 300}]}}, "m")
    assert fast.decoder == ("pil", 320)


@pytest.mark.parametrize("config, message", [
    ({"preprocess": {"steps": {"resize": "longest"}}}, r"preprocess\.steps must be a list"),
    ({"preprocess": {"steps": ["resize"]}}, r"preprocess\.steps\[0\] must be a dict such as"),
    ({"preprocess": {"steps": [{"resize": "longest", "size": 64, "center_crop": 60}]}},
     r"preprocess\.steps\[0\] must hold exactly one of resize, center_crop, pad"),
    ({"preprocess": {"steps": [{"resize": "longest", "size": 64}, {"pad": 64, "fil": 3}]}},
     r"unknown key 'fil' in the pad step preprocess\.steps\[1\]; did you mean 'fill'\?"),
    ({"preprocess": {"steps": [{"resize": "longest"}]}},
     r"preprocess\.steps\[0\]\.size must be a positive int"),
    ({"preprocess": {"steps": [{"resize": "squash", "size": 8}]}},
     r"preprocess\.steps\[0\]\.resize must be one of stretch, keep_aspect, longest, shortest"),
    ({"preprocess": {"steps": [{"resize": "longest", "size": 8, "interpolation": "bilinar"}]}},
     r"preprocess\.steps\[0\]\.interpolation 'bilinar' is unknown \(did you mean 'bilinear'"),
    ({"preprocess": {"steps": [{"resize": "longest", "size": 8, "interpolation": "area",
                                "backend": "pil"}]}},
     r"steps\[0\]\.interpolation area is cv2's INTER_AREA; set backend: cv2"),
    ({"preprocess": {"steps": [{"resize": "stretch", "size": 8, "multiple": 4}]}},
     r"multiple and rounding apply to resize: longest or shortest"),
    ({"preprocess": {"steps": [{"center_crop": [0, 8]}]}},
     r"preprocess\.steps\[0\]\.center_crop must be a positive int or \[height, width\]"),
    ({"preprocess": {"steps": [{"pad": 8, "fill": 256}]}},
     r"preprocess\.steps\[0\]\.fill must be a pixel value 0-255"),
    ({"input_size": 64, "preprocess": {"steps": []}},
     r"preprocess\.steps gives every size, so input_size has no effect; drop input_size"),
    ({"preprocess": {"steps": [], "crop_pct": 0.9}},
     r"preprocess\.steps lists every step, so preprocess\.crop_pct has no effect"),
    ({"preprocess": {"steps": [], "timm": {"input_size": [3, 8, 8]}}},
     r"preprocess has both steps and timm"),
    ({"preprocess": {"fast_jpeg": True, "steps": [{"center_crop": 8}]}},
     r"fast_jpeg needs a known resize size: make the first step a resize"),
])
def test_a_bad_step_is_one_line_naming_it_and_the_fix(config, message):
    with pytest.raises(CheckpointError, match=r"^m\.pt: .*" + message) as error:
        validate_preprocess(config, "m.pt")
    assert "\n" not in str(error.value)
