"""Preprocessing as trained: each case is checked against a reference written here with plain
PIL / cv2 / albumentations / timm / torchvision, never with inference_core."""

import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A
import cv2
import timm
from albumentations.pytorch import ToTensorV2
from timm.data import create_transform, resolve_data_config
from torchvision import transforms as T

from inference_core.decode import decode_image
from inference_core.errors import CheckpointError, TestSetError
from inference_core.model_factory import create_model
from inference_core.predict import EnsemblePredictor, Member, prefetch
from inference_core.preprocess import Preprocess, validate_preprocess
from inference_core.transforms import target_size, to_tensor

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """A non-square PNG (37 x 53) and a non-square JPEG (240 x 320) with detail in them."""
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "noise.png")
    y, x = np.mgrid[0:240, 0:320]
    photo = np.stack([(x * 0.8) % 256, (y * 1.1) % 256, (x + y) % 256], -1).astype(np.uint8)
    photo[::7] = rng.integers(0, 256, photo[::7].shape, dtype=np.uint8)
    Image.fromarray(photo).save(folder / "photo.jpg", quality=90)
    return {"png": folder / "noise.png", "jpg": folder / "photo.jpg"}


def _pil(path):
    with Image.open(path) as image:
        return image.convert("RGB")


def _normalised(array, mean=MEAN, std=STD):
    """Reference ToTensor + Normalize, by torchvision."""
    return T.Normalize(mean, std)(T.ToTensor()(array))


def _ours(path, config, name="model.pt"):
    preprocess = validate_preprocess(config, name)
    return to_tensor(decode_image(path, *preprocess.decoder), preprocess)


def _same(ours, reference, atol=1e-6):
    assert ours.dtype == torch.float32 and ours.shape == reference.shape
    torch.testing.assert_close(ours, reference.float(), atol=atol, rtol=0)


# --- the existing keys keep their meaning ---------------------------------------------------


def _preprocess(size=64, resize="keep_aspect"):
    return Preprocess(size, resize, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


@pytest.mark.parametrize("height, width, expected", [
    (300, 400, (48, 64)),
    (400, 300, (64, 48)),
    (100, 100, (64, 64)),
    (1000, 90, (64, 16)),  # never below one multiple
    (37, 53, (48, 64)),
])
def test_keep_aspect_puts_the_longest_side_at_size_and_snaps_to_16(height, width, expected):
    assert target_size(height, width, _preprocess()) == expected
    assert all(side % 16 == 0 for side in expected)


def test_stretch_is_square_and_normalisation_follows_the_checkpoint():
    image = np.full((10, 20, 3), 255, dtype=np.uint8)
    image[..., 1] = 0
    tensor = to_tensor(image, _preprocess(32, "stretch"))
    assert tensor.shape == (3, 32, 32)
    assert torch.allclose(tensor[0], torch.full((32, 32), 2.0))  # (1 - 0.5) / 0.25
    assert torch.allclose(tensor[1], torch.full((32, 32), -2.0))


def test_a_legacy_config_is_pil_bilinear_and_equals_the_positional_preprocess(pictures):
    config = {"input_size": 24, "resize": "stretch", "mean": [0.5] * 3, "std": [0.25] * 3}
    assert validate_preprocess(config, "m.pt") == Preprocess(24, "stretch", (0.5,) * 3, (0.25,) * 3)
    reference = _normalised(np.array(_pil(pictures["jpg"]).resize((24, 24), Image.BILINEAR)),
                            (0.5,) * 3, (0.25,) * 3)
    _same(_ours(pictures["jpg"], config), reference)


def test_a_large_jpeg_decodes_at_a_reduced_scale_but_never_below_what_is_asked(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(np.full((600, 800, 3), 128, dtype=np.uint8)).save(path)
    assert decode_image(path).shape == (600, 800, 3)
    assert decode_image(path, at_least=140).shape == (150, 200, 3)  # 1/4 scale
    assert decode_image(path, at_least=300).shape == (300, 400, 3)  # 1/2 scale
    assert decode_image(path, at_least=1000).shape == (600, 800, 3)
    png = tmp_path / "big.png"
    Image.fromarray(np.full((600, 800, 3), 128, dtype=np.uint8)).save(png)
    assert decode_image(png, at_least=140).shape == (600, 800, 3)  # only JPEG scales


@pytest.mark.parametrize("decoder", ["pil", "cv2"])
def test_corrupt_image_is_named(tmp_path, decoder):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(TestSetError, match=r"bad\.png: cannot decode image") as error:
        decode_image(bad, decoder)
    assert "\n" not in str(error.value)
    good = tmp_path / "a.png"
    Image.fromarray(np.full((8, 8), 60, dtype=np.uint8)).save(good)
    assert decode_image(good, decoder).shape == (8, 8, 3)


# --- decoders and albumentations ------------------------------------------------------------


def _cv2_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_cv2_decode_is_imread_then_rgb(pictures):
    for path in pictures.values():
        np.testing.assert_array_equal(decode_image(path, "cv2"), _cv2_rgb(path))
        np.testing.assert_array_equal(decode_image(path), np.array(_pil(path)))


@pytest.mark.parametrize("to_tensor_v2", [True, False])
def test_cv2_and_an_albumentations_pipeline_match_the_training_code(pictures, to_tensor_v2):
    steps = [A.LongestMaxSize(max_size=48, interpolation=cv2.INTER_AREA),
             A.PadIfNeeded(48, 48, border_mode=cv2.BORDER_CONSTANT, fill=0),
             A.Normalize(mean=MEAN, std=STD)]
    transform = A.Compose(steps + ([ToTensorV2()] if to_tensor_v2 else []))
    config = {"input_size": 999, "mean": [0.0] * 3,  # not applied again: the pipeline normalises
              "preprocess": {"decode": "cv2", "albumentations": A.to_dict(transform)}}
    for path in pictures.values():
        output = transform(image=_cv2_rgb(path))["image"]
        reference = output if to_tensor_v2 else torch.from_numpy(output).permute(2, 0, 1)
        _same(_ours(path, config), reference)


def test_albumentations_settings_are_one_hashable_group_whatever_the_key_order():
    transform = A.to_dict(A.Compose([A.Resize(16, 16), A.Normalize()]))
    shuffled = {key: transform[key] for key in reversed(list(transform))}
    first = validate_preprocess({"preprocess": {"albumentations": transform}}, "a.pt")
    second = validate_preprocess({"preprocess": {"albumentations": shuffled}}, "b.pt")
    assert first == second and len({first, second}) == 1
    cv2_read = validate_preprocess({"preprocess": {"decode": "cv2", "albumentations": transform}},
                                   "c.pt")
    assert cv2_read != first and cv2_read.decoder != first.decoder


# --- built-in steps -------------------------------------------------------------------------


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos"])
def test_pil_interpolations_match_torchvision_resize_of_the_shortest_side(pictures, interpolation):
    mode = getattr(T.InterpolationMode, interpolation.upper())
    config = {"input_size": 24, "resize": "shortest",
              "preprocess": {"interpolation": interpolation}}
    for path in pictures.values():
        reference = _normalised(T.Resize(24, interpolation=mode)(_pil(path)))
        _same(_ours(path, config), reference)


@pytest.mark.parametrize("interpolation, flag", [
    ("nearest", cv2.INTER_NEAREST), ("bilinear", cv2.INTER_LINEAR), ("bicubic", cv2.INTER_CUBIC),
    ("lanczos", cv2.INTER_LANCZOS4), ("area", cv2.INTER_AREA)])
def test_cv2_interpolations_match_cv2_resize(pictures, interpolation, flag):
    config = {"input_size": 20, "resize": "longest",
              "preprocess": {"decode": "cv2", "interpolation": interpolation}}
    image = _cv2_rgb(pictures["png"])  # 37 x 53: the long side goes to 20, the other floors
    reference = cv2.resize(image, (20, math.floor(37 * 20 / 53)), interpolation=flag)
    _same(_ours(pictures["png"], config), _normalised(reference))


def test_area_on_a_pil_decode_resizes_with_cv2(pictures):
    config = {"input_size": 24, "preprocess": {"interpolation": "area"}}
    reference = cv2.resize(np.array(_pil(pictures["jpg"])), (24, 24), interpolation=cv2.INTER_AREA)
    _same(_ours(pictures["jpg"], config), _normalised(reference))


@pytest.mark.parametrize("crop_pct", [0.875, 0.95, 1.0])
def test_crop_pct_is_resize_to_size_over_pct_then_center_crop(pictures, crop_pct):
    config = {"input_size": 28, "resize": "shortest", "mean": [0.5] * 3, "std": [0.5] * 3,
              "preprocess": {"interpolation": "bicubic", "crop_pct": crop_pct}}
    reference = T.Compose([T.Resize(math.floor(28 / crop_pct), T.InterpolationMode.BICUBIC),
                           T.CenterCrop(28), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    for path in pictures.values():
        _same(_ours(path, config), reference(_pil(path)))


def test_crop_size_is_torchvision_center_crop_and_pads_when_larger(pictures):
    for crop in ([20, 30], [29, 30], [40, 60]):  # inside the 32 x 45 resize, and larger
        config = {"input_size": 32, "resize": "shortest", "preprocess": {"crop_size": crop}}
        reference = T.Compose([T.Resize(32), T.CenterCrop(crop), T.ToTensor(),
                               T.Normalize(MEAN, STD)])
        _same(_ours(pictures["png"], config), reference(_pil(pictures["png"])))


def test_longest_then_pad_matches_albumentations_pad_if_needed(pictures):
    config = {"input_size": 32, "resize": "longest",
              "preprocess": {"pad": 32, "pad_fill": [10, 20, 30]}}
    resized = np.array(_pil(pictures["png"]).resize((32, 22), Image.BILINEAR))  # 37*32/53 = 22.3
    padded = A.PadIfNeeded(32, 32, border_mode=cv2.BORDER_CONSTANT, fill=(10, 20, 30))(
        image=resized)["image"]
    _same(_ours(pictures["png"], config), _normalised(padded))


@pytest.mark.parametrize("resize, rounding, expected", [
    ("longest", "floor", (16, 32)),  # 37 * 32 / 53 = 22.3 -> 2.79 multiples of 8
    ("longest", "round", (24, 32)),
    ("shortest", "floor", (32, 40)),  # 53 * 32 / 37 = 45.8 -> 5.73 multiples of 8
    ("shortest", "round", (32, 48)),
])
def test_sides_round_to_the_multiple(resize, rounding, expected):
    preprocess = validate_preprocess({"input_size": 32, "resize": resize,
                                      "preprocess": {"multiple": 8, "rounding": rounding}}, "m")
    assert target_size(37, 53, preprocess) == expected
    assert target_size(53, 37, preprocess) == expected[::-1]


@pytest.mark.parametrize("height, width, size", [(14, 42, 17), (49, 98, 16), (66, 110, 18)])
def test_the_long_side_is_computed_as_torchvision_does_where_floats_are_inexact(
        height, width, size):
    preprocess = validate_preprocess({"input_size": size, "resize": "shortest"}, "m")
    resized = T.Resize(size)(Image.new("RGB", (width, height)))
    assert target_size(height, width, preprocess) == (resized.height, resized.width)
    assert target_size(width, height, preprocess) == (resized.width, resized.height)


def test_the_log_line_names_each_step():
    built_in = validate_preprocess({"input_size": 28, "resize": "shortest", "preprocess": {
        "decode": "cv2", "interpolation": "area", "crop_pct": 0.875, "pad": 30}}, "m")
    assert built_in.describe() == ("cv2 decode, resize shortest 32 area (cv2), center crop 28x28, "
                                   "pad to 30x30 with [0, 0, 0], mean [0.485, 0.456, 0.406] "
                                   "std [0.229, 0.224, 0.225]")
    pipeline = A.to_dict(A.Compose([A.Resize(8, 8), A.Normalize(), ToTensorV2()]))
    assert validate_preprocess({"preprocess": {"albumentations": pipeline}}, "m").describe() == \
        "pil decode, albumentations Resize > Normalize > ToTensorV2"


# --- timm -----------------------------------------------------------------------------------


@pytest.mark.parametrize("override", [
    {},  # the model's own resolved config (center crop, crop_pct 0.95)
    {"crop_mode": "squash", "crop_pct": 0.9},
    {"crop_mode": "border", "crop_pct": 1.0, "interpolation": "bicubic"},
    {"input_size": (3, 40, 32), "crop_mode": "center"},
    {"input_size": (3, 40, 32), "crop_mode": "border", "crop_pct": 0.875},
])
def test_timm_data_config_matches_timm_eval_transform(pictures, override):
    model = timm.create_model("test_resnet", pretrained=False)
    data_config = {**resolve_data_config({}, model=model), **override}
    reference = create_transform(**data_config)
    config = {"input_size": 7, "preprocess": {"timm": data_config}}  # input_size: timm's wins
    for path in pictures.values():
        _same(_ours(path, config), reference(_pil(path)))


# --- fast_jpeg and the ensemble's decoding ---------------------------------------------------


def _member(name, config):
    torch.manual_seed(0)
    return Member(name=name, model=create_model("small_cnn", num_classes=3, width=4).eval(),
                  preprocess=Preprocess.from_checkpoint_config(config, name), weight=1.0,
                  threshold_shift=0.0, tta=["identity"], activation="softmax", num_classes=3,
                  classes=None)


def test_each_decoder_decodes_once_and_equal_settings_share_one_tensor(pictures, monkeypatch):
    import inference_core.predict as predict

    exact = {"input_size": 32}
    fast = {"input_size": 32, "preprocess": {"fast_jpeg": True}}
    cv2_read = {"input_size": 32, "preprocess": {"decode": "cv2", "resize_backend": "pil"}}
    members = [_member("a", exact), _member("b", dict(exact)), _member("fast", fast),
               _member("cv2", cv2_read)]
    calls = []
    real = predict.decode_image
    monkeypatch.setattr(predict, "decode_image",
                        lambda path, *decoder: calls.append((path.name, *decoder)) or
                        real(path, *decoder))
    predictor = EnsemblePredictor(members, devices=[torch.device("cpu")])
    prepared = predictor.prepare([pictures["jpg"], pictures["png"]])
    assert sorted(calls, key=str) == sorted(
        [(path.name, *decoder) for path in pictures.values()
         for decoder in [("pil", None), ("pil", 32), ("cv2", None)]], key=str)
    assert len(prepared.tensors) == 3  # a and b share theirs
    assert predictor.groups[members[0].preprocess] == [0, 1]

    photo = Image.open(pictures["jpg"])
    photo.draft("RGB", (32, 32))  # what fast_jpeg means: PIL's reduced-scale DCT decode
    assert photo.size == (80, 60)
    fast_reference = _normalised(np.array(photo.convert("RGB").resize((32, 32), Image.BILINEAR)))
    exact_reference = _normalised(np.array(_pil(pictures["jpg"]).resize((32, 32), Image.BILINEAR)))
    cv2_reference = _normalised(np.array(
        Image.fromarray(_cv2_rgb(pictures["jpg"])).resize((32, 32), Image.BILINEAR)))
    _same(prepared.tensors[members[0].preprocess][0], exact_reference)
    _same(prepared.tensors[members[2].preprocess][0], fast_reference)
    _same(prepared.tensors[members[3].preprocess][0], cv2_reference)
    assert (fast_reference - exact_reference).abs().max() > 1e-3  # fast_jpeg did change pixels


def test_an_albumentations_model_in_loader_threads_gets_the_training_pixels(pictures):
    transform = A.Compose([A.SmallestMaxSize(max_size=24, interpolation=cv2.INTER_CUBIC),
                           A.CenterCrop(24, 24), A.Normalize(), ToTensorV2()])
    config = {"preprocess": {"decode": "cv2", "albumentations": A.to_dict(transform)}}
    predictor = EnsemblePredictor([_member("alb", config)], devices=[torch.device("cpu")])
    paths = [pictures["png"], pictures["jpg"]] * 3
    batches = list(prefetch([paths[i:i + 2] for i in range(0, 6, 2)], predictor.prepare, 2))
    preprocess = predictor.members[0].preprocess
    for batch, prepared in batches:
        for path, tensor in zip(batch, prepared.tensors[preprocess], strict=True):
            _same(tensor, transform(image=_cv2_rgb(path))["image"])


def test_an_image_one_decoder_cannot_read_is_left_out_for_all(tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.fromarray(np.full((9, 12, 3), 90, dtype=np.uint8)).save(good)
    bad.write_bytes(b"not an image")
    cv2_read = {"input_size": 16, "preprocess": {"decode": "cv2"}}
    predictor = EnsemblePredictor([_member("p", {"input_size": 16}), _member("c", cv2_read)],
                                  devices=[torch.device("cpu")])
    prepared = predictor.prepare([bad, good])
    assert prepared.decoded.tolist() == [1]
    assert len(prepared.errors) == 1 and "bad.png: cannot decode image" in prepared.errors[0]
    assert all(len(tensors) == 1 for tensors in prepared.tensors.values())


# --- bad input: one clear line --------------------------------------------------------------


@pytest.mark.parametrize("config, message", [
    ({"input_size": 32, "preprocess": {"interpolation": "bilinar"}},
     r"m\.pt: preprocess\.interpolation 'bilinar' is unknown \(did you mean 'bilinear'\?\)"),
    ({"input_size": 32, "preprocess": {"interpolaton": "bicubic"}},
     r"m\.pt: unknown preprocess key 'interpolaton'; did you mean 'interpolation'\?"),
    ({"preprocess": {"albumentations": {"transform": {"__class_fullname__": "NoSuchResize"}}}},
     r"m\.pt: preprocess\.albumentations does not rebuild \(KeyError.*NoSuchResize.*\); save it "
     r"with A\.to_dict\(transform\) from albumentations 2\.x"),
    ({"preprocess": {"albumentations": [1, 2]}}, r"albumentations must be a dict, got list"),
    ({"input_size": 32, "preprocess": {"crop_pct": 1.5}},
     r"m\.pt: preprocess\.crop_pct must be a number in \(0, 1\]"),
    ({"input_size": 32, "preprocess": {"crop_pct": 0.9, "crop_size": 30}},
     r"both crop_size and crop_pct"),
    ({"input_size": 32, "preprocess": {"interpolation": "area", "resize_backend": "pil"}},
     r"area is cv2's INTER_AREA; set resize_backend: cv2"),
    ({"input_size": 32, "preprocess": {"decode": "cv2", "fast_jpeg": True}},
     r"fast_jpeg is PIL's .*; set decode: pil"),
    ({"input_size": 32, "preprocess": {"input_size": 64}},
     r"preprocess\.input_size belongs beside preprocess; move input_size to the top level"),
    ({"input_size": 30, "resize": "longest", "preprocess": {"multiple": 16}},
     r"input_size 30 must be a multiple of preprocess\.multiple 16"),
    ({"input_size": 32, "preprocess": {"multiple": 16}},
     r"multiple and rounding apply to resize: longest or shortest"),
    ({"input_size": 32, "preprocess": {"pad_fill": 300}}, r"pad_fill must be a pixel value"),
    ({"preprocess": {"decode": "cv2"}}, r"m\.pt: checkpoint config lacks a usable input_size"),
    ({"input_size": 32, "resize": "squash"}, r"resize must be one of stretch, keep_aspect"),
    ({"input_size": 32, "preprocess": {"timm": {"input_size": [3, 8, 8]}, "crop_pct": 0.9}},
     r"preprocess\.timm is the whole pipeline, so preprocess\.crop_pct has no effect"),
    ({"preprocess": {"timm": {"input_size": [3, 8, 8], "crop_pc": 0.9}}},
     r"unknown preprocess\.timm key 'crop_pc'; did you mean 'crop_pct'\?"),
    ({"preprocess": {"timm": {"input_size": [3, 8, 8], "crop_mode": "middle"}}},
     r"preprocess\.timm\.crop_mode 'middle' is unknown"),
    ({"input_size": 32, "preprocess": "cv2"}, r"config preprocess must be a dict"),
])
def test_bad_preprocess_is_one_line_naming_the_checkpoint_and_the_fix(config, message):
    with pytest.raises(CheckpointError, match=message) as error:
        validate_preprocess(config, "m.pt")
    assert "\n" not in str(error.value)
