"""square_crop gives the pixels of pad-the-frame-then-slice, inside, across and outside the frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stages.crops import FILL, square_crop, square_window


@pytest.mark.parametrize(
    "x0, y0, side",
    [
        (10, 20, 30),
        (-8, -5, 40),
        (340, 220, 50),
        (-30, 100, 20),
        (400, 300, 16),
        (-100, -100, 700),
        (0, 0, 240),
    ],
)
@pytest.mark.parametrize("size", [64, 128])
def test_same_pixels_as_padding_the_frame(x0: int, y0: int, side: int, size: int) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (240, 360, 3), dtype=np.uint8)
    off = 800
    padded = cv2.copyMakeBorder(image, off, off, off, off, cv2.BORDER_CONSTANT, value=(FILL,) * 3)
    want = cv2.resize(padded[y0 + off : y0 + off + side, x0 + off : x0 + off + side], (size, size))
    np.testing.assert_array_equal(square_crop(image, x0, y0, side, size), want)


@pytest.mark.parametrize(
    "box, pad, expected",
    [
        ([250, 187, 268, 224], 0.25, (231, 178, 56)),  # 37 px tall: side ceil(55.5); centre (259, 205.5)
        ([107, 197, 172, 240], 0.1, (100, 180, 78)),  # wide cart: the longer side (65 * 1.2) decides
        ([10.0, 10.0, 10.4, 10.4], 0.1, (9, 9, 2)),  # at least 2 px
    ],
)
def test_square_window(box: list[float], pad: float, expected: tuple[int, int, int]) -> None:
    assert square_window(box, pad) == expected
