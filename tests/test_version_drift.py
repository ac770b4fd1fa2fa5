"""Version drift is visible: a checkpoint records the versions that built its model and ran its
preprocessing, and loading it where a package differs logs one warning line naming each such
package (the kernel's loading code, and `kernelpack predict`, whose --compare then shows the
effect)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from inference_core.checkpoint import save_checkpoint
from inference_core.config import EnsembleConfig
from inference_core.errors import CheckpointError
from inference_core.model_config import ModelConfig
from inference_core.model_factory import create_model
from inference_core.preprocess import validate_preprocess
from inference_core.runner import discover, load_ensemble
from inference_core.transforms import to_tensor
from inference_core.versions import DRIFT_PREFIX, drift, drift_warning, package_versions
from kernelpack.cli import main
from kernelpack.weights.predict import predict_images


def test_drift_names_each_package_that_differs_and_which_models_recorded_it():
    here = {"torch": "2.4.0", "albumentations": "2.0.8", "numpy": "1.26.4"}
    assert drift({"torch": "2.4.0", "albumentations": "0.4.6", "timm": "0.4.12"}, here) == \
        {"albumentations": ("0.4.6", "2.0.8")}  # timm: not imported here, so not compared
    line = drift_warning([("a", {"albumentations": "0.4.6", "torch": "2.4.0"}),
                          ("b", {"albumentations": "0.4.6", "numpy": "1.19.5"}),
                          ("c", None), ("d", {"albumentations": "1.3.1"})], here)
    assert line == (
        "WARNING version drift: albumentations 0.4.6 -> 2.0.8 (a, b); albumentations 1.3.1 -> "
        "2.0.8 (d); numpy 1.19.5 -> 1.26.4 (b): recorded when imported -> here; the pixels or "
        "outputs may differ from training, check on the host with kernelpack predict --compare")
    assert "\n" not in line
    assert drift_warning([("a", here), ("b", None)], here) is None


def test_versions_are_checked_where_the_checkpoint_is_read():
    checkpoint = {"arch": "small_cnn", "num_classes": 2, "config": {"input_size": 8}}
    for bad, message in [([1], "must be a mapping of package to version"),
                         ({"torch": 2}, "versions.torch: must be a non-empty string")]:
        with pytest.raises(CheckpointError, match=message):
            ModelConfig.from_checkpoint({**checkpoint, "config": {"input_size": 8,
                                                                  "versions": bad}}, "m.pt")


@pytest.fixture
def drifted(tmp_path):
    """Two checkpoints: one recording an old albumentations and torch, one recording this
    process's own versions; four images; a config blending both."""
    torch.manual_seed(0)
    here = package_versions()
    old = {**here, "torch": "1.1.0", "numpy": "1.16.4"}
    config = {"input_size": 16, "activation": "softmax", "model_kwargs": {"width": 4}}
    for name, versions in [("old", old), ("same", here)]:
        save_checkpoint(tmp_path / "models" / f"{name}.pt", "small_cnn", 3,
                        {**config, "name": name, "versions": versions},
                        create_model("small_cnn", num_classes=3, width=4))
    images = tmp_path / "images"
    images.mkdir()
    for index in range(4):
        Image.fromarray(np.full((20, 24, 3), 40 * index, np.uint8)).save(images / f"{index}.png")
    ensemble = EnsembleConfig.from_dict({
        "models": [{"name": "old"}, {"name": "same"}], "test": {"images": str(images)},
        "submission": {"format": "probabilities"}, "input_roots": [str(tmp_path / "models")]})
    return tmp_path, ensemble, here


def test_the_kernels_loading_logs_one_line_naming_the_drifted_packages(drifted):
    _, ensemble, here = drifted
    lines = []
    discovery = discover(ensemble, ensemble.input_roots, lines.append)
    load_ensemble(ensemble, discovery, None, lines.append)
    warnings = [line for line in lines if line.startswith(DRIFT_PREFIX)]
    assert warnings == [
        f"{DRIFT_PREFIX} numpy 1.16.4 -> {here['numpy']} (old); torch 1.1.0 -> {here['torch']} "
        "(old): recorded when imported -> here; the pixels or outputs may differ from training, "
        "check on the host with kernelpack predict --compare"]


def test_host_predict_keeps_the_drift_line_for_compare(drifted):
    root, ensemble, _ = drifted
    lines = []
    prediction = predict_images(ensemble, root / "images", log=lines.append, progress=False)
    assert prediction.drift is not None and prediction.drift in lines
    assert "torch 1.1.0 ->" in prediction.drift and "(old)" in prediction.drift


def test_import_checkpoint_keeps_the_training_versions_given_in_config(tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(create_model("small_cnn", num_classes=3, width=4).state_dict(),
               tmp_path / "w.pth")
    (tmp_path / "c.json").write_text(json.dumps({"input_size": 16, "model_kwargs": {"width": 4},
                                                 "versions": {"albumentations": "0.4.6"}}))
    assert main(["import-checkpoint", str(tmp_path / "w.pth"), "-o", str(tmp_path / "m.pt"),
                 "--arch", "small_cnn", "--num-classes", "3", "--name", "m", "--config",
                 str(tmp_path / "c.json")]) == 0
    versions = torch.load(tmp_path / "m.pt", weights_only=True)["config"]["versions"]
    assert versions == {**package_versions(), "albumentations": "0.4.6"}
    assert versions["torch"] == str(torch.__version__)
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("recorded versions (the kernel warns where its own differ): ")
    assert "albumentations 0.4.6" in line and f"torch {torch.__version__}" in line


def _saved_by_1x(**pad):
    """A PadIfNeeded dict as albumentations 1.3.1's A.to_dict wrote it."""
    return {"__version__": "1.3.1", "transform": {
        "__class_fullname__": "Compose", "p": 1.0, "bbox_params": None, "keypoint_params": None,
        "additional_targets": {}, "is_check_shapes": True, "transforms": [{
            "__class_fullname__": "PadIfNeeded", "always_apply": False, "p": 1.0,
            "min_height": 8, "min_width": 8, "pad_height_divisor": None,
            "pad_width_divisor": None, "position": "center", "mask_value": None, **pad}]}}


def test_a_1x_pad_colour_that_2x_would_drop_is_refused_not_lost():
    # 2.x calls it `fill`; its from_dict drops `value` with a warning, padding with 0 instead.
    with pytest.raises(CheckpointError) as error:
        validate_preprocess({"preprocess": {"albumentations": _saved_by_1x(
            border_mode=0, value=[124, 116, 104])}}, "m.pt")
    assert "PadIfNeeded's value (saved by albumentations 1.3.1) would be dropped by " \
        "albumentations 2." in str(error.value)
    # Unset arguments drop harmlessly; the saved border mode (1.x's default reflect) is kept.
    preprocess = validate_preprocess({"preprocess": {"albumentations": _saved_by_1x(
        border_mode=4, value=None)}}, "m.pt")
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    padded = to_tensor(image, preprocess)[0].numpy()
    expected = np.pad(image[:, :, 0], 2, mode="reflect")  # cv2's REFLECT_101 is numpy's reflect
    np.testing.assert_array_equal(padded, expected)


def test_predict_compare_shows_the_drift_beside_the_difference_even_when_quiet(drifted, capsys):
    root, _, _ = drifted
    (root / "ensemble.yml").write_text(json.dumps({
        "models": [{"name": "old"}, {"name": "same"}], "test": {"images": "unused"},
        "submission": {"format": "probabilities"}}))
    args = ["predict", str(root / "ensemble.yml"), "--images", str(root / "images"),
            "--models", str(root / "models"), "--quiet"]
    assert main([*args, "-o", str(root / "ref.npy")]) == 0
    capsys.readouterr()
    assert main([*args, "-o", str(root / "again.npy"), "--compare", str(root / "ref.npy")]) == 0
    out = capsys.readouterr().out.splitlines()
    drift_lines = [line for line in out if line.startswith(DRIFT_PREFIX)]
    assert len(drift_lines) == 1 and "torch 1.1.0 ->" in drift_lines[0]
    assert any(line.startswith("matches ") for line in out)


def test_loader_threads_rebuilding_at_once_each_see_their_own_dropped_arguments():
    # catch_warnings swaps process-wide state: unguarded, one thread's exit restores the
    # filters while another records, and that thread's warning (and refusal) goes missing.
    import threading
    import warnings

    from inference_core.pipelines import DroppedArgumentsError, rebuild_albumentations

    text = json.dumps(_saved_by_1x(border_mode=0, value=[124, 116, 104]))
    filters = list(warnings.filters)
    outcomes, start = [], threading.Barrier(8)

    def rebuild():
        start.wait()
        for _ in range(20):
            try:
                rebuild_albumentations(text)
                outcomes.append("rebuilt")
            except DroppedArgumentsError:
                outcomes.append("refused")

    threads = [threading.Thread(target=rebuild) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == ["refused"] * 160
    assert warnings.filters == filters
