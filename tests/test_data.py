import dataclasses

import numpy as np
import pytest
from PIL import Image

from inference_core.config import TestSection
from inference_core.data import find_input_root, resolve_test_set
from inference_core.errors import TestSetError

TEST = TestSection(images="comp/test", sample_submission=None, pattern="*.png", extension=".png")


def _competition(tmp_path, ids=("b", "a", "c")):
    folder = tmp_path / "comp" / "test"
    folder.mkdir(parents=True)
    for i, image_id in enumerate(ids):
        Image.fromarray(np.full((8, 8), i * 60, dtype=np.uint8)).save(folder / f"{image_id}.png")
    return folder


def test_ids_come_from_the_sample_submission_in_its_order(tmp_path):
    _competition(tmp_path)
    (tmp_path / "comp" / "sample_submission.csv").write_text("id,label\nc,0\nb,0\na,0\n")
    test = dataclasses.replace(TEST, sample_submission="comp/sample_submission.csv")
    test_set = resolve_test_set(test, tmp_path, "id")
    assert test_set.ids == ["c", "b", "a"]
    assert [p.name for p in test_set.paths] == ["c.png", "b.png", "a.png"]


def test_ids_come_from_a_sorted_glob_without_a_sample_submission(tmp_path):
    _competition(tmp_path)
    assert resolve_test_set(TEST, tmp_path, "id").ids == ["a", "b", "c"]


def test_missing_test_folder_names_it_and_the_fix(tmp_path):
    with pytest.raises(TestSetError, match=r"test folder 'comp/test' not found under .*; attach"):
        resolve_test_set(TEST, tmp_path, "id")


def test_images_missing_from_the_sample_submission_are_counted(tmp_path):
    _competition(tmp_path, ids=("a",))
    (tmp_path / "comp" / "sample_submission.csv").write_text("id,label\na,0\nz,0\n")
    test = dataclasses.replace(TEST, sample_submission="comp/sample_submission.csv")
    with pytest.raises(TestSetError, match=r"1 of 2 test images .* missing .*z\.png"):
        resolve_test_set(test, tmp_path, "id")


def test_wrong_id_column_and_no_input_root(tmp_path):
    _competition(tmp_path)
    (tmp_path / "comp" / "sample_submission.csv").write_text("image,label\na,0\n")
    test = dataclasses.replace(TEST, sample_submission="comp/sample_submission.csv")
    with pytest.raises(TestSetError, match=r"no column 'id'.*submission\.id_column"):
        resolve_test_set(test, tmp_path, "id")
    with pytest.raises(TestSetError, match="no input root found"):
        find_input_root([str(tmp_path / "nope"), str(tmp_path / "nope2")])
