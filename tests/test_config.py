import copy
import dataclasses
import json

import pytest

from inference_core.config import EnsembleConfig
from inference_core.errors import ConfigError
from kernelpack.config import load_config

GOOD = {
    "models": [
        {"name": "cnn_f0", "path": "models/cnn_f0.pt"},
        {"name": "cnn_f1", "path": "models/cnn_f1.pt", "weight": 2.0},
        {"name": "res_f0", "path": "models/res_f0.pt", "tta": ["identity", "hflip"]},
    ],
    "test": {"images": "comp/test"},
    "submission": {"format": "multiclass"},
}


def _with(path, value):
    config = copy.deepcopy(GOOD)
    target = config
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return config


def test_defaults_are_filled_in():
    config = EnsembleConfig.from_dict(copy.deepcopy(GOOD))
    assert config.blend == "mean"
    assert config.tta == ("identity",)
    assert config.models[0].weight == 1.0
    assert config.models[1].threshold_shift == 0.0
    assert config.submission.id_column == "id"
    assert config.input_roots == ("/kaggle/input", "../input")
    assert config.to_dict()["budget"] == {"seconds": 9 * 3600.0, "margin": 0.1}
    assert config.loader_threads == "auto" and config.precision == "auto"
    assert config.models[0].required is False and config.models[0].fold is None


@pytest.mark.parametrize("path, value, message", [
    (("models", 2, "weight"), -0.1, "models[2].weight: must be >= 0, got -0.1"),
    (("submission", "format"), KeyError,
     "submission.format: missing; add one of multiclass, multilabel, topk, probabilities"),
    (("test", "images"), KeyError, "test.images: missing; add the folder of test images"),
    (("submission", "format"), "csv",
     "submission.format: must be one of multiclass, multilabel, topk, probabilities, "
     "got 'csv'"),
    (("blend",), "median", "blend: must be one of mean, gmean, got 'median'"),
    (("models", 1, "tta"), ["identity", "flip"],
     "models[1].tta[1]: must be one of identity, hflip, vflip"),
    (("batch_size",), 0, "batch_size: must be >= 1, got 0"),
    (("submission", "threshold"), 1.5, "submission.threshold: must be between 0 and 1, got 1.5"),
    (("blnd",), "gmean", "blnd: unknown field; did you mean 'blend'?"),
    (("models", 0, "wieght"), 1, "models[0].wieght: unknown field; did you mean 'weight'?"),
    (("models",), [], "models: must not be empty"),
    (("models", 1, "name"), "cnn_f0", "models[1].name: duplicate model name 'cnn_f0'"),
    (("budget",), {"seconds": 0}, "budget.seconds: must be > 0, got 0"),
    (("loader_threads",), -1, "loader_threads: must be >= 0, got -1"),
    (("precision",), "bf16", "precision: must be one of auto, fp32, fp16, got 'bf16'"),
    (("budget",), {"margin": 1}, "budget.margin: must be at least 0 and below 1, got 1"),
    (("models", 0, "fold"), -1, "models[0].fold: must be >= 0, got -1"),
    (("models", 0, "sha256"), "abc", "models[0].sha256: must be 64 lower-case hex digits"),
    (("models", 0, "required"), "yes", "models[0].required: must be true or false, got 'yes'"),
])
def test_bad_fields_are_named_with_the_problem(path, value, message):
    with pytest.raises(ConfigError) as info:
        EnsembleConfig.from_dict(_with(path, value))
    assert str(info.value).startswith(message)


def test_load_config_prefixes_the_file_and_reports_yaml_syntax(tmp_path):
    bad = tmp_path / "ensemble.yml"
    bad.write_text("models:\n  - name: a\n    path: [unclosed\n")
    with pytest.raises(ConfigError, match=r"ensemble\.yml: not valid YAML at line \d+"):
        load_config(bad)
    bad.write_text("test: {images: comp/test}\nsubmission: {format: multiclass}\n")
    with pytest.raises(ConfigError, match=r"ensemble\.yml: models: missing"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"absent\.yml: config file not found"):
        load_config(tmp_path / "absent.yml")


def test_kernel_section_is_validated_on_the_host(tmp_path):
    path = tmp_path / "ensemble.yml"
    base = "models: [{name: a, path: a.pt}]\ntest: {images: t}\nsubmission: {format: multiclass}\n"
    path.write_text(base + "kernel: {id: me/my-kernel, dataset_sources: [me/models]}\n")
    kernel = load_config(path).kernel
    assert kernel.is_private is True and kernel.enable_internet is False
    path.write_text(base + "kernel: {id: 'My Kernel'}\n")
    with pytest.raises(ConfigError, match=r"kernel\.id: must look like 'username/kernel-slug'"):
        load_config(path)
    path.write_text(base + "kernel: {id: me/k, privat: true}\n")
    with pytest.raises(ConfigError, match=r"kernel\.privat: unknown field; did you mean"):
        load_config(path)


def test_no_validated_config_can_change_another():
    first = EnsembleConfig.from_dict(copy.deepcopy(GOOD))
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.input_roots = ("/mnt/extra",)
    with pytest.raises(AttributeError):
        first.tta.append("hflip")  # lists are read as tuples
    second = EnsembleConfig.from_dict(copy.deepcopy(GOOD))
    assert second.input_roots == ("/kaggle/input", "../input")
    assert second.tta == ("identity",)

    def mutable(value):
        if dataclasses.is_dataclass(value):
            return any(mutable(getattr(value, spec.name)) for spec in dataclasses.fields(value))
        if isinstance(value, tuple):
            return any(mutable(item) for item in value)
        return isinstance(value, (list, dict, set))

    assert not mutable(second)


def test_the_embedded_json_reads_back_as_the_same_config():
    raw = {**copy.deepcopy(GOOD), "blend": "gmean", "models": [
        {"name": "se50", "folds": [0, 1], "value": [0.1, 0.2], "tta": ["hflip"]},
        {"name": "res", "sha256": "a" * 64, "threshold_shift": 0.05}],
           "submission": {"format": "multilabel", "threshold": [0.3, 0.4], "classes": ["a", 2]}}
    config = EnsembleConfig.from_dict(raw)
    assert EnsembleConfig.from_json(config.to_json()) == config
    assert EnsembleConfig.from_dict(config.to_dict()) == config
    plain = json.loads(config.to_json())
    assert plain == config.to_dict() and plain["tta_blend"] == "gmean"
    assert plain["submission"]["threshold"] == [0.3, 0.4]
    assert plain["models"][0]["folds"] == [0, 1]


def test_a_folds_entry_expands_to_one_member_per_fold_sharing_its_weight():
    config = EnsembleConfig.from_dict(_with(("models",), [
        {"name": "se50", "folds": [0, 1, 2, 3], "weight": 0.3, "tta": ["hflip"]},
        {"name": "res_f0", "weight": 0.7},
    ]))
    assert config.models[0].folds == (0, 1, 2, 3)  # the config keeps the group form
    members = config.members()
    assert [(m.label, m.entry.name, m.fold, m.group, m.index) for m in members] == [
        ("se50_f0", "se50", 0, "se50", 0), ("se50_f1", "se50", 1, "se50", 0),
        ("se50_f2", "se50", 2, "se50", 0), ("se50_f3", "se50", 3, "se50", 0),
        ("res_f0", "res_f0", None, "res_f0", 1)]
    assert [m.weight for m in members] == pytest.approx([0.075] * 4 + [0.7])
    assert all(m.entry.tta == ("hflip",) for m in members[:4])
    # Folds that were not found: the group keeps its weight, split over the folds present.
    present = config.members(present={"se50_f1", "se50_f3", "res_f0"})
    assert [(m.label, m.weight) for m in present] == [
        ("se50_f1", pytest.approx(0.15)), ("se50_f3", pytest.approx(0.15)), ("res_f0", 0.7)]


@pytest.mark.parametrize("entries, message", [
    ([{"name": "se50", "folds": [0, 1, 1]}], "models[0].folds[2]: fold 1 is listed twice"),
    ([{"name": "se50", "folds": [0, 1], "fold": 0}],
     "models[0].fold: a folds group has one file per fold; drop fold"),
    ([{"name": "se50", "folds": [0, 1], "path": "m/se50.pt"}],
     "models[0].path: a folds group has one file per fold; drop path"),
    ([{"name": "se50", "folds": []}], "models[0].folds: must not be empty"),
    ([{"name": "se50", "folds": [0, -1]}], "models[0].folds[1]: must be >= 0, got -1"),
    ([{"name": "se50", "folds": [0, 1]}, {"name": "se50", "folds": [2, 3]}],
     "models[1].name: duplicate model name 'se50'"),
    ([{"name": "se50", "folds": [0, 1]}, {"name": "se50_f1"}],
     "models[1].name: duplicate model name 'se50_f1'"),
])
def test_bad_folds_groups_are_named_with_the_fix(entries, message):
    with pytest.raises(ConfigError) as info:
        EnsembleConfig.from_dict(_with(("models",), entries))
    assert str(info.value).startswith(message)


def test_tta_ops_with_parameters_and_the_tta_blend_default():
    config = EnsembleConfig.from_dict({**copy.deepcopy(GOOD), "blend": "gmean",
                                       "tta": ["identity", "center_crop:0.875", "crop_br:0.9",
                                               "scale:1.15"]})
    assert config.tta == ("identity", "center_crop:0.875", "crop_br:0.9", "scale:1.15")
    assert config.tta_blend == "gmean"  # the blend mode, unless given
    assert EnsembleConfig.from_dict({**copy.deepcopy(GOOD), "tta_blend": "max"}).tta_blend \
        == "max"


@pytest.mark.parametrize("tta, message", [
    (["center_crop:1.5"], "tta[0]: center_crop needs the fraction of each side to keep, above 0 "
                          "and below 1 (e.g. center_crop:0.875), got 'center_crop:1.5'"),
    (["identity", "crop_tl"], "tta[1]: crop_tl needs the fraction of each side to keep"),
    (["scale:0"], "tta[0]: scale needs a factor above 0 and at most 4 (e.g. scale:1.15), "
                  "got 'scale:0'"),
    (["scale:big"], "tta[0]: scale needs a factor above 0"),
    (["crop_centre:0.8"], "tta[0]: must be one of identity, hflip, vflip, rot90, rot180, rot270, "
                          "transpose, center_crop:F, crop_tl:F, crop_tr:F, crop_bl:F, crop_br:F, "
                          "scale:F, random_crop:SxN, random_crop_hflip:SxN, got 'crop_centre:0.8'"),
    (["hflip:2"], "tta[0]: must be one of identity"),
    (["hflip", "identity", "hflip"], "tta[2]: 'hflip' is listed twice; list each view once"),
])
def test_bad_tta_ops_are_named_with_the_fix(tta, message):
    with pytest.raises(ConfigError) as info:
        EnsembleConfig.from_dict({**copy.deepcopy(GOOD), "tta": tta})
    assert str(info.value).startswith(message)
    with pytest.raises(ConfigError, match=r"^tta_blend: must be one of mean, gmean, max"):
        EnsembleConfig.from_dict({**copy.deepcopy(GOOD), "tta_blend": "median"})


@pytest.mark.parametrize("submission, message", [
    ({"format": "multilabel", "classes": ["cat", "dog", "cat"]},
     "submission.classes: labels must be unique; 'cat' is listed at [0] and [2]"),
    ({"format": "multilabel", "min_labels": 3, "max_labels": 2},
     "submission.max_labels: 2 is below min_labels 3; no row could satisfy both"),
    ({"format": "multilabel", "classes": ["a", "b", "c"], "threshold": [0.3, 0.4]},
     "submission.threshold: 2 thresholds for 3 classes; give one per class"),
])
def test_submission_fields_that_contradict_each_other_are_refused(submission, message):
    with pytest.raises(ConfigError) as info:
        EnsembleConfig.from_dict({**copy.deepcopy(GOOD), "submission": submission})
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
