import dataclasses

import numpy as np
import pytest
from PIL import Image

from inference_core.config import TestSection
from inference_core.data import find_input_root, resolve_test_set
from inference_core.errors import TestSetError
from inference_core.inputs import InputLayoutError

TEST = TestSection(images="comp/test", sample_submission=None, pattern="*.png", extension=".png")


def _competition(tmp_path, ids=("b", "a", "c"), mount="comp"):
    folder = tmp_path / mount / "test"
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


def test_a_sample_submission_with_a_byte_order_mark_reads_as_the_searches_read_it(tmp_path):
    import pandas as pd

    _competition(tmp_path)
    sample = tmp_path / "comp" / "sample_submission.csv"
    sample.write_bytes(b"\xef\xbb\xbfid,label\nc,0\nb,0\na,0\n")  # as a spreadsheet saves it
    test = dataclasses.replace(TEST, sample_submission="comp/sample_submission.csv")
    assert resolve_test_set(test, tmp_path, "id").ids == ["c", "b", "a"]
    assert list(pd.read_csv(sample, dtype=str)["id"]) == ["c", "b", "a"]  # blend search's reader
    sample.write_bytes(b"id,label\nc\xe9,0\n")  # latin-1, not UTF-8
    with pytest.raises(TestSetError, match=r"sample_submission.csv: not UTF-8 text \(byte \d+\)"):
        resolve_test_set(test, tmp_path, "id")


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


def test_the_test_set_is_found_in_todays_layout_and_the_log_says_where(tmp_path):
    folder = _competition(tmp_path, mount="competitions/comp")
    (folder.parent / "sample_submission.csv").write_text("id,label\nc,0\na,0\n")
    (tmp_path / "datasets" / "me" / "comp-models").mkdir(parents=True)
    test = dataclasses.replace(TEST, sample_submission="comp/sample_submission.csv")
    lines = []
    test_set = resolve_test_set(test, tmp_path, "id", lines.append)
    assert (test_set.ids, test_set.folder) == (["c", "a"], folder)
    assert test_set.paths == [folder / "c.png", folder / "a.png"]
    assert lines == [f"input test.images 'comp/test': {folder} (competitions layout)",
                     "input test.sample_submission 'comp/sample_submission.csv': "
                     f"{folder.parent / 'sample_submission.csv'} (competitions layout)"]


def test_a_competition_mounted_twice_is_an_error_naming_both(tmp_path):
    _competition(tmp_path)
    _competition(tmp_path, mount="competitions/comp")
    with pytest.raises(InputLayoutError, match=r"2 sources are mounted as 'comp' under .* \(comp "
                                               r"and competitions/comp\); attach only one"):
        resolve_test_set(TEST, tmp_path, "id")
