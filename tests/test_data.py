import numpy as np
import pytest
import torch
from PIL import Image

from inference_core.data import (
    Preprocess,
    decode_image,
    find_input_root,
    resolve_test_set,
    target_size,
    to_tensor,
)
from inference_core.errors import TestSetError

TEST = {"images": "comp/test", "sample_submission": None, "pattern": "*.png", "extension": ".png"}


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


def _competition(tmp_path, ids=("b", "a", "c")):
    folder = tmp_path / "comp" / "test"
    folder.mkdir(parents=True)
    for i, image_id in enumerate(ids):
        Image.fromarray(np.full((8, 8), i * 60, dtype=np.uint8)).save(folder / f"{image_id}.png")
    return folder


def test_ids_come_from_the_sample_submission_in_its_order(tmp_path):
    _competition(tmp_path)
    (tmp_path / "comp" / "sample_submission.csv").write_text("id,label\nc,0\nb,0\na,0\n")
    test = {**TEST, "sample_submission": "comp/sample_submission.csv"}
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
    test = {**TEST, "sample_submission": "comp/sample_submission.csv"}
    with pytest.raises(TestSetError, match=r"1 of 2 test images .* missing .*z\.png"):
        resolve_test_set(test, tmp_path, "id")


def test_wrong_id_column_and_no_input_root(tmp_path):
    _competition(tmp_path)
    (tmp_path / "comp" / "sample_submission.csv").write_text("image,label\na,0\n")
    test = {**TEST, "sample_submission": "comp/sample_submission.csv"}
    with pytest.raises(TestSetError, match=r"no column 'id'.*submission\.id_column"):
        resolve_test_set(test, tmp_path, "id")
    with pytest.raises(TestSetError, match="no input root found"):
        find_input_root([str(tmp_path / "nope"), str(tmp_path / "nope2")])


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


def test_corrupt_image_is_named(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(TestSetError, match=r"bad\.png: cannot decode image"):
        decode_image(bad)
    assert decode_image(_competition(tmp_path) / "a.png").shape == (8, 8, 3)
