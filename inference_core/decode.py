"""Decoding: an image file becomes an HxWx3 uint8 RGB array, or a TestSetError naming the file
(that image then gets the fallback row).

Pixels a test image may have: 2**29, about 23,000 x 23,000 (its RGB copy is 1.5 GiB). Large scans
decode (a 15,000 x 15,000 herbarium sheet has 2.25e8); a file claiming more is taken for a
decompression bomb. PIL's own limit (MAX_IMAGE_PIXELS, 8.9e7 by default, a DecompressionBombError
above twice that) is raised to this one by `allow_large_images`, which the first decode calls;
cv2 (whose own limit is 2**30) is only asked once PIL has read the size from the header.
"""

from __future__ import annotations

import os
import warnings
from functools import cache

import numpy as np
from PIL import Image

from .errors import TestSetError

MAX_IMAGE_PIXELS = 2 ** 29


@cache  # once per process: warnings.filterwarnings resets every warning cache it touches
def allow_large_images() -> None:
    """Let PIL open images up to MAX_IMAGE_PIXELS, and silence its DecompressionBombWarning,
    which only repeats the check `decode_image` makes itself. Process-wide (PIL has one limit,
    read by every thread), so it is set here, on the first decode, and never on import."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def decode_image(path: str | os.PathLike, decoder: str = "pil", at_least: int | None = None
                 ) -> np.ndarray:
    """HxWx3 uint8 RGB; raises TestSetError naming the file if it cannot be decoded.

    `decoder` "pil" is PIL's `convert("RGB")`; "cv2" is `cv2.imread(path, cv2.IMREAD_COLOR)` then
    BGR -> RGB, as albumentations users read images. With `at_least` (PIL only), a JPEG is decoded
    straight at a reduced scale (1/2, 1/4 or 1/8, by the decoder's DCT scaling) whose sides all
    stay at least `at_least` pixels: faster, but not the pixels of a full decode."""
    allow_large_images()
    if decoder == "cv2":
        return _decode_cv2(path)
    try:
        with Image.open(path) as image:
            _check_pixels(path, *image.size)
            if at_least and image.format == "JPEG":
                image.draft("RGB", (at_least, at_least))
            return np.array(image.convert("RGB"))  # a writable copy, as torch wants
    except TestSetError:
        raise
    except Exception as exc:  # any failure on one file (PIL raises OSError,
        # SyntaxError, struct.error, DecompressionBombError...) is that image's fallback row
        raise TestSetError(f"{path}: cannot decode image ({exc or type(exc).__name__})") from None


def _check_pixels(path: str | os.PathLike, width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise TestSetError(f"{path}: {width}x{height} pixels is above the {MAX_IMAGE_PIXELS:,} a "
                           "test image may have (a decompression bomb?); it gets the fallback "
                           "prediction")


def _decode_cv2(path: str | os.PathLike) -> np.ndarray:
    """cv2.imread, after the pixel limit is checked on the header (read by PIL, lazily)."""
    import cv2

    try:
        with Image.open(path) as image:
            size = image.size
    except Exception:  # a format only cv2 reads: its own limit (2**30) applies
        size = None
    if size is not None:
        _check_pixels(path, *size)
    try:
        image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    except Exception as exc:  # cv2.error on some damaged files
        raise TestSetError(f"{path}: cannot decode image ({exc})") from None
    if image is None:
        raise TestSetError(f"{path}: cannot decode image (cv2.imread returned None); check "
                           "that the file exists and is an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
