"""A path the config names by slug is found in every layout Kaggle mounts sources in, old and new;
a slug mounted twice is an error naming both; wheel datasets are found in every layout too."""

import json

import pytest

from inference_core.inputs import InputLayoutError, as_named, find_input
from inference_core.wheel_install import MANIFEST_FILE, find_wheel_datasets

# Where each layout mounts a source called `src`, under the input root.
MOUNTS = {"flat": "src", "competitions": "competitions/src", "datasets": "datasets/alice/src",
          "models": "models/alice/src", "notebooks": "notebooks/bob/src"}


@pytest.mark.parametrize("layout", sorted(MOUNTS))
def test_a_path_named_by_slug_is_found_in_each_layout(tmp_path, layout):
    (tmp_path / MOUNTS[layout] / "test").mkdir(parents=True)
    (tmp_path / "datasets" / "carol" / "other").mkdir(parents=True)  # another owner, another slug
    found = find_input(tmp_path, "src/test")
    assert (found.path, found.layout) == (tmp_path / MOUNTS[layout] / "test", layout)
    assert found.describe("test.images") == (
        f"input test.images 'src/test': {tmp_path / MOUNTS[layout] / 'test'} ({layout} layout)")


def test_a_path_named_from_the_root_or_outside_any_source_is_taken_as_named(tmp_path):
    (tmp_path / "datasets" / "alice" / "src").mkdir(parents=True)
    (tmp_path / "src").mkdir()
    (tmp_path / "sample.csv").write_text("id\n")
    # Named with the owner, it is one source even though `src` is mounted twice.
    assert find_input(tmp_path, "datasets/alice/src").path == tmp_path / "datasets/alice/src"
    assert find_input(tmp_path, "sample.csv").describe("x") == (
        f"input x 'sample.csv': {tmp_path / 'sample.csv'} (as named)")
    assert find_input(tmp_path, "nothing/test").describe("x") == (
        f"input x 'nothing/test': {tmp_path / 'nothing/test'} (as named, NOT FOUND)")
    assert find_input(tmp_path, "/abs/test").path.as_posix() == "/abs/test"


def test_one_source_mounted_at_two_points_is_not_ambiguous(tmp_path):
    (tmp_path / "competitions" / "src" / "test").mkdir(parents=True)
    (tmp_path / "src").symlink_to(tmp_path / "competitions" / "src")
    assert find_input(tmp_path, "src/test").path == tmp_path / "src" / "test"


def test_a_slug_mounted_twice_is_one_line_naming_both_and_the_fix(tmp_path):
    (tmp_path / "src" / "test").mkdir(parents=True)
    (tmp_path / "datasets" / "alice" / "src" / "test").mkdir(parents=True)
    with pytest.raises(InputLayoutError) as error:
        find_input(tmp_path, "src/test")
    assert str(error.value) == (
        f"'src/test': 2 sources are mounted as 'src' under {tmp_path} (src and "
        "datasets/alice/src); attach only one of them to the kernel, or name the path from the "
        "input root (e.g. datasets/alice/src/test)")
    (tmp_path / "src" / "test").rmdir()
    (tmp_path / "src").rmdir()
    (tmp_path / "datasets" / "bob" / "src").mkdir(parents=True)
    with pytest.raises(InputLayoutError, match=r"\(datasets/alice/src and datasets/bob/src\)"):
        find_input(tmp_path, "src")


def test_a_found_path_reads_as_the_config_names_it():
    assert as_named("datasets/alice/imet-models/a.pt") == "imet-models/a.pt"
    assert as_named("competitions/imet/baseline/a.pt") == "imet/baseline/a.pt"
    assert as_named("models/me/digits/pytorch/default/3/m.pt") == "digits/pytorch/default/3/m.pt"
    assert as_named("notebooks/bob/prep/out/a.pt") == "prep/out/a.pt"
    assert as_named("my-models/v2/a.pt") == "my-models/v2/a.pt"
    assert as_named("datasets/a.pt") == "datasets/a.pt"  # a flat dataset called `datasets`


def test_wheel_datasets_are_found_in_every_layout_and_one_level_inside(tmp_path):
    places = ["flat-wheels", "flat/inner", "competitions/comp", "datasets/alice/ds-wheels",
              "datasets/alice/ds/inner", "models/alice/m/other/default/2",
              "notebooks/bob/built-wheels", "notebooks/bob/nb/inner"]
    for place in places:
        (tmp_path / place).mkdir(parents=True)
        (tmp_path / place / MANIFEST_FILE).write_text(json.dumps({"format": 1}))
    # Two levels inside a source is not searched (a competition's million-image folders).
    (tmp_path / "flat" / "a" / "b").mkdir(parents=True)
    (tmp_path / "flat" / "a" / "b" / MANIFEST_FILE).write_text("{}")
    (tmp_path / "linked").symlink_to(tmp_path / "flat-wheels")  # the same folder, once
    found = find_wheel_datasets([str(tmp_path)])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in found) == sorted(places)
