"""Hostile ensemble configs: every one ends in a validated config holding only finite numbers, or
one ConfigError line naming the file, the field and the fix; `build` writes nothing then."""

from __future__ import annotations

import copy
import math

import pytest
from cli_run import assert_one_line_error, kernelpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_core.config import EnsembleConfig
from inference_core.errors import ConfigError
from inference_core.fields import to_plain
from kernelpack.config import load_config, validate_host_config

VALID = {
    "models": [{"name": "a", "weight": 0.6, "fold": 0}, {"name": "b", "folds": [0, 1]}],
    "test": {"images": "comp/test", "sample_submission": "comp/sample_submission.csv"},
    "submission": {"format": "multilabel", "threshold": [0.3, 0.4], "min_labels": 1,
                   "max_labels": 3},
    "blend": "gmean",
    "tta": ["identity", "hflip", "scale:1.15"],
    "budget": {"seconds": 3600, "margin": 0.1},
    "batch_size": 16,
    "loader_threads": 2,
    "kernel": {"id": "me/a-kernel", "is_private": True},
}
GOOD_YAML = """\
models:
  - {name: a, weight: 1}
test: {images: comp/test}
submission: {format: multiclass}
"""

# YAML-ish values: what yaml.safe_load can give, with the numbers that break naive checks.
SCALARS = st.one_of(
    st.none(), st.booleans(), st.text(max_size=12),
    st.integers(), st.integers(min_value=10 ** 300, max_value=10 ** 5000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["auto", "mean", "gmean", "multiclass", "hflip", "scale:nan", "scale:inf",
                     "center_crop:1e309", "../../x.csv", "submission.csv", "", " "]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.one_of(st.text(max_size=8), st.integers(), st.sampled_from(
        ["name", "weight", "fold", "folds", "threshold", "seconds", "file", "value"])),
        inner, max_size=4),
    max_leaves=12,
)
# Where to put a hostile value inside an otherwise valid config.
PATHS = [("models", 0, "weight"), ("models", 0, "fold"), ("models", 1, "folds"),
         ("models", 0, "threshold_shift"), ("models", 0, "value"), ("models", 1, "value"),
         ("models", 0, "tta"), ("models", 0), ("models",), ("submission", "threshold"),
         ("submission", "threshold", 0), ("submission", "min_labels"), ("submission", "k"),
         ("submission", "file"), ("submission", "classes"), ("budget", "seconds"),
         ("budget", "margin"), ("budget",), ("batch_size",), ("loader_threads",), ("tta",),
         ("tta", 2), ("test", "images"), ("input_roots",), ("kernel", "id"), ("kernel",),
         ("kernel", "dataset_sources")]


def _finite_everywhere(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_everywhere(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_everywhere(v) for v in value)
    return True


def _plain(config) -> dict:
    """A host config as the plain types it was read from."""
    return {**config.ensemble.to_dict(), "kernel": to_plain(config.kernel)}


def _validated_or_config_error(raw) -> None:
    try:
        config = validate_host_config(raw)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) < 600, message
        return
    assert _finite_everywhere(_plain(config)), config
    assert "/" not in config.ensemble.submission.file
    assert math.isfinite(sum(m.weight for m in config.ensemble.models))


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES)
def test_any_value_is_a_config_or_one_config_error(raw):
    _validated_or_config_error(raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), VALUES)
def test_a_hostile_value_anywhere_in_a_valid_config_is_caught_by_name(path, value):
    raw = copy.deepcopy(VALID)
    target = raw
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    _validated_or_config_error(raw)


YAML_PIECES = [*"abc:-[]{},&*!|>'\"#%@ \n\t0123456789.eE+", "!!int ", "!!float ", "!!binary ",
               "!!timestamp ", "!!set ", "!!omap ", "<<: ", "? ", "--- ", "...", ".nan", ".inf",
               "2024-13-45", "0x", "!!python/object:os.system ", "&a ", "*a", "models:",
               "weight: ", "name: ", "\n  - ", "\x00", "\x85", "\ufeff", "\x1b", "\t- "]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), st.lists(st.sampled_from(YAML_PIECES), max_size=30).map("".join))
def test_any_yaml_text_loads_as_a_config_or_one_config_error(tmp_path_factory, prefix, text):
    path = tmp_path_factory.mktemp("yaml") / "ensemble.yml"
    path.write_text((GOOD_YAML if prefix else "") + text)
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc), str(exc)
    else:
        assert _finite_everywhere(_plain(config))


@pytest.mark.parametrize(("yaml_text", "fragments"), [
    ("models:\n  - {name: a, weight: .nan}\n", ["models[0].weight", "finite", "nan"]),
    ("models:\n  - {name: a, weight: .inf}\n", ["models[0].weight", "finite", "inf"]),
    ("models:\n  - {name: a, weight: 1.0e+999}\n", ["models[0].weight", "finite"]),
    ("models:\n  - {name: a, weight: 1" + "0" * 400 + "}\n", ["models[0].weight", "401 digits"]),
    ("models:\n  - {name: a, weight: 1.5e+308}\n  - {name: b, weight: 1.5e+308}\n",
     ["models", "beyond any float"]),
    ("models:\n  - {name: a, threshold_shift: -.inf}\n", ["threshold_shift", "finite"]),
    ("models:\n  - {name: a, threshold_shift: 3}\n", ["threshold_shift", "below 1"]),
    ("models:\n  - {name: a}\nsubmission: {format: multilabel, threshold: .nan}\n",
     ["submission.threshold", "finite"]),
    ("models:\n  - {name: a}\nsubmission: {format: multilabel, threshold: [0.5, .nan]}\n",
     ["submission.threshold[1]", "finite"]),
    ("models:\n  - {name: a}\nbudget: {seconds: .inf}\n", ["budget.seconds", "finite"]),
    ("models:\n  - {name: a}\nbudget: {margin: .nan}\n", ["budget.margin", "finite"]),
    ("models:\n  - {name: a, value: .nan}\n", ["models[0].value", "finite"]),
    ("models:\n  - {name: a}\nbatch_size: 1000000000000\n", ["batch_size", "<= 65536"]),
    ("models:\n  - {name: a}\nloader_threads: 100000\n", ["loader_threads", "<= 64"]),
    ("models:\n  - {name: a}\nsubmission: {format: multiclass, file: ../../../x.csv}\n",
     ["submission.file", "working folder"]),
    ("models:\n  - {name: a}\nsubmission: {format: multiclass, file: /tmp/x.csv}\n",
     ["submission.file", "working folder"]),
    ("models:\n  - {name: a}\ntest: {images: x, pattern: ../*}\n", ["test.pattern", "inside"]),
    ("models:\n  - {name: a}\nblend: 2024-13-45\n", ["cannot be read", "month"]),
    ('models:\n  - {name: a}\ntest: {images: "comp\\0test"}\n', ["test.images", "NUL"]),
    ("models:\n  - {name: a, weight: !!float x}\n", ["cannot be read"]),
    ("models:\n  - {name: a}\ntest: {images: x, pattern: /etc/*}\n", ["test.pattern", "inside"]),
])
def test_build_refuses_non_finite_and_escaping_values_in_one_line(tmp_path, yaml_text,
                                                                  fragments):
    if "submission:" not in yaml_text:
        yaml_text += "submission: {format: multiclass}\n"
    config = tmp_path / "ensemble.yml"
    if "test:" not in yaml_text:
        yaml_text += "test: {images: comp/test}\n"
    config.write_text(yaml_text)
    done = kernelpack("build", config, "-o", tmp_path / "out")
    assert_one_line_error(done, str(config), *fragments)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path.parent / "x.csv").exists()


def test_a_duplicate_yaml_key_is_an_error_naming_the_key_and_both_lines(tmp_path):
    config = tmp_path / "ensemble.yml"
    config.write_text(GOOD_YAML + "blend: gmean\nbatch_size: 8\nblend: mean\n")
    done = kernelpack("build", config, "-o", tmp_path / "out")
    assert_one_line_error(done, str(config), "line 7", "'blend'", "twice", "line 5")
    nested = tmp_path / "nested.yml"
    nested.write_text("models:\n  - {name: a, weight: 1, weight: 2}\n"
                      "test: {images: x}\nsubmission: {format: multiclass}\n")
    assert_one_line_error(kernelpack("build", nested, "-o", tmp_path / "out"), "'weight'",
                          "line 2")
    assert not (tmp_path / "out").exists()


def test_merge_keys_may_still_override_what_they_merge(tmp_path):
    config = tmp_path / "ensemble.yml"
    config.write_text("models:\n  - &base {name: a, weight: 1}\n  - {<<: *base, name: b}\n"
                      "test: {images: x}\nsubmission: {format: multiclass}\n")
    done = kernelpack("build", config, "-o", tmp_path / "out")
    assert done.code == 0, done.err
    assert (tmp_path / "out" / "kernel.py").is_file()


def test_a_non_utf8_config_a_folder_and_deep_nesting_are_one_line(tmp_path):
    binary = tmp_path / "latin1.yml"
    binary.write_bytes(GOOD_YAML.encode() + "# caf\xe9\n".encode("latin-1"))
    assert_one_line_error(kernelpack("build", binary, "-o", tmp_path / "out"), str(binary),
                          "not UTF-8")
    assert_one_line_error(kernelpack("build", tmp_path, "-o", tmp_path / "out"), "is a folder")
    deep = tmp_path / "deep.yml"
    deep.write_text("models: " + "[" * 3000 + "]" * 3000 + "\n")
    assert_one_line_error(kernelpack("build", deep, "-o", tmp_path / "out"), str(deep))
    assert not (tmp_path / "out").exists()


def test_a_billion_laughs_config_fails_at_once_in_one_short_line(tmp_path):
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    config = tmp_path / "laughs.yml"
    config.write_text("\n".join(["x:", *(f"  {line}" for line in lines),
                                 "models: *a9", "test: *a9", "submission: *a9"]) + "\n")
    error = assert_one_line_error(kernelpack("build", config, "-o", tmp_path / "out"), str(config))
    assert len(error) < 400
    assert not (tmp_path / "out").exists()


def test_the_kernel_validates_the_same_way():
    """A hand-edited kernel.py (config JSON with NaN) fails in the runtime's own check."""
    raw = {"models": [{"name": "a", "weight": math.nan}], "test": {"images": "x"},
           "submission": {"format": "multiclass"}}
    with pytest.raises(ConfigError, match=r"models\[0\].weight: must be a finite number"):
        EnsembleConfig.from_dict(raw)
