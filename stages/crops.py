"""Square windows cut out of a frame and resized, with the part outside the frame filled grey.

The pixels are those of padding the whole frame and slicing, without padding the whole frame: at
1080p that copy (5760 x 4920 x 3 bytes) cost more than the network it fed.
"""

from __future__ import annotations

import cv2
import numpy as np

FILL = 114  # ultralytics' letterbox grey


def square_window(box: np.ndarray | list[float], pad: float) -> tuple[int, int, int]:
    """(x0, y0, side): the square around `box` (x1, y1, x2, y2), `pad` of its longer side added on each
    side, at least 2 px; it may extend past the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(2, int(np.ceil(max(x2 - x1, y2 - y1) * (1 + 2 * pad))))
    return round((x1 + x2) / 2 - side / 2), round((y1 + y2) / 2 - side / 2), side


def square_crop(image: np.ndarray, x0: int, y0: int, side: int, size: int) -> np.ndarray:
    """The `side` x `side` window at (x0, y0) of `image` (it may extend past the edges), as size x size."""
    height, width = image.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, width), min(y0 + side, height)
    if xa == x0 and ya == y0 and xb == x0 + side and yb == y0 + side:
        patch = image[ya:yb, xa:xb]
    else:
        patch = np.full((side, side, 3), FILL, np.uint8)
        if xb > xa and yb > ya:
            patch[ya - y0 : yb - y0, xa - x0 : xb - x0] = image[ya:yb, xa:xb]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_LINEAR)
