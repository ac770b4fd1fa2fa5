"""Oversized test images: a large scan decodes, a decompression bomb becomes a logged fallback
row, and the kernel always writes its submission with every row."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from inference_core.config import EnsembleConfig
from inference_core.decode import MAX_IMAGE_PIXELS, decode_image
from inference_core.errors import TestSetError
from inference_core.runner import run_kernel

# The kernel silences PIL's bomb warning once (its own check says more); pytest resets warning
# filters around each test, so it is silenced here too.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A tiny grayscale PNG whose header claims width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("decoder", ["pil", "cv2"])
def test_a_header_claiming_too_many_pixels_is_a_test_set_error(tmp_path, decoder):
    assert 2 ** 28 <= MAX_IMAGE_PIXELS <= 2 ** 30
    for width, height in [(100_000, 100_000), (30_000, 30_000), (2 ** 20, 2 ** 10)]:
        assert width * height > MAX_IMAGE_PIXELS
        path = bomb_png(tmp_path / f"bomb{width}.png", width, height)
        with pytest.raises(TestSetError, match=rf"{path.name}: (cannot decode image|\d+x\d+ pix)"):
            decode_image(path, decoder)


def test_damaged_files_of_every_kind_are_test_set_errors(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    data = good.read_bytes()
    cases = {"empty.png": b"", "cut.png": data[:40], "text.png": b"not an image",
             "zeros.png": data[:16] + b"\x00" * 40, "gif.gif": b"GIF89a" + b"\xff" * 20}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        for decoder in ("pil", "cv2"):
            with pytest.raises(TestSetError, match=name):
                decode_image(tmp_path / name, decoder)


MAGICS = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00",
          b"RIFF\x00\x00\x00\x00WEBP", b"P6\n"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MAGICS), st.binary(max_size=400), st.sampled_from(["pil", "cv2"]))
def test_any_bytes_decode_to_an_rgb_image_or_a_test_set_error(tmp_path_factory, magic, body,
                                                              decoder):
    path = tmp_path_factory.mktemp("fuzz") / "x.img"
    path.write_bytes(magic + body)
    try:
        image = decode_image(path, decoder)
    except TestSetError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@pytest.fixture
def hostile_test_set(digits_input, tmp_path) -> Path:
    """digits models beside a test set of 3 digits, a 15000 x 15000 grayscale scan and two
    bombs, listed in a sample submission."""
    root = tmp_path / "input"
    shutil.copytree(digits_input / "digits-models", root / "digits-models")
    test = root / "comp" / "test"
    test.mkdir(parents=True)
    for path in sorted((digits_input / "digits" / "test").glob("*.png"))[:3]:
        shutil.copy(path, test / path.name)
    # The case: PIL's default limit refused it (DecompressionBombError), so no submission.
    Image.new("L", (15_000, 15_000), 200).save(test / "herbarium.png")
    bomb_png(test / "bomb.png", 100_000, 100_000)
    bomb_png(test / "half-bomb.png", 30_000, 30_000)  # between our limit and PIL's error
    ids = sorted(p.stem for p in test.glob("*.png"))
    pd.DataFrame({"id": ids, "label": 0}).to_csv(root / "comp" / "sample_submission.csv",
                                                 index=False)
    return root


@pytest.mark.slow
def test_a_large_scan_is_decoded_and_a_bomb_is_one_fallback_row(hostile_test_set, tmp_path):
    # ~10 s: one 15000 x 15000 image is decoded for real; that is the case under test.
    config = {"models": [{"name": "cnn_f0"}, {"name": "cnn_f1"}],
              "test": {"images": "comp/test", "sample_submission": "comp/sample_submission.csv"},
              "submission": {"format": "multiclass"}, "input_roots": [str(hostile_test_set)],
              "batch_size": 4}
    work = tmp_path / "working"
    work.mkdir()
    lines: list[str] = []
    summary = run_kernel(EnsembleConfig.from_dict(config), working_dir=work, log=lines.append,
                         progress=False)
    submission = pd.read_csv(work / "submission.csv", dtype=str)
    expected = sorted(p.stem for p in (hostile_test_set / "comp" / "test").glob("*.png"))
    assert sorted(submission["id"]) == expected and submission["label"].notna().all()
    assert summary.fallback_rows == 2
    warnings = [line for line in lines if "WARNING" in line and "fallback" in line]
    assert len(warnings) == 2
    assert any("bomb.png" in w and "cannot decode image" in w for w in warnings)
    assert any("half-bomb.png" in w and "pixels is above" in w for w in warnings)
    assert not any("herbarium" in w for w in warnings)


PROCESS_STATE_PROBE = """
import sys, warnings
from pathlib import Path
import numpy, torch  # they install warning filters of their own on import
from PIL import Image

before = (Image.MAX_IMAGE_PIXELS, list(warnings.filters))
import inference_core.decode, inference_core.predict, inference_core.preprocess
import inference_core.transforms
assert (Image.MAX_IMAGE_PIXELS, list(warnings.filters)) == before, "state set on import"

warnings.simplefilter("error")  # PIL's bomb warning would now fail the decode
from inference_core.decode import MAX_IMAGE_PIXELS, decode_image
from inference_core.errors import TestSetError
try:
    decode_image(Path(sys.argv[1]))
except TestSetError as exc:
    print(exc)
assert Image.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS
"""


def test_importing_sets_no_process_state_and_the_first_decode_allows_large_images(tmp_path):
    # A header of 14000 x 13000 pixels: twice PIL's default limit, so PIL refuses to open it
    # unless the limit was raised first; its data is cut short, so decoding fails after that.
    path = bomb_png(tmp_path / "large.png", 14_000, 13_000)
    assert 2 * 89_478_485 < 14_000 * 13_000 <= MAX_IMAGE_PIXELS
    done = subprocess.run([sys.executable, "-c", PROCESS_STATE_PROBE, str(path)],
                          capture_output=True, text=True, cwd=Path(__file__).parents[2],
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "large.png: cannot decode image (image file is truncated" in done.stdout
