"""imagecorruptions' glass_blur, bit for bit, with its pixel loop done in one array pass.

The package's glass_blur blurs, then walks every inner pixel (rows and columns in
descending order), draws an offset (dx, dy) in [-delta, delta) with one
`np.random.randint(..., size=(2,))` call, and runs `x[h, w], x[h', w'] = x[h', w'], x[h, w]`
on H x W x 3 arrays. Both right-hand sides are views, so that line copies the source
pixel into (h, w) and leaves the source as it is: each pixel takes the value its source
holds at that moment, which is the source's new value when the loop has already visited
it and its old one otherwise. Then it blurs again. The Python loop costs about 0.27 s
per 128 x 64 image, three quarters of the whole benchmark's corruption time.

Here the same draws are taken in one call (NumPy's legacy generator yields the same
sequence for one call of size (n, 2) as for n calls of size 2), each pixel's chain of
already-visited sources is followed by pointer doubling, and every pixel is copied once.
The blurs are the package's own calls. `tests/corruptions/test_corruptions.py` checks that the
result equals the package's glass_blur exactly, at every severity.
"""
from __future__ import annotations

import numpy as np

from igoas.corruptions.library import imagecorruptions

# (sigma, max_delta, iterations) per severity: the package's own table
PARAMETERS = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))


def glass_blur(image: np.ndarray, severity: int = 1) -> np.ndarray:
    """The package's glass_blur(image, severity) (float image in [0, 255], as it returns)."""

    gaussian = imagecorruptions().corruptions.gaussian  # the package's blur, as the package calls it
    sigma, delta, iterations = PARAMETERS[severity - 1]
    pixels = np.uint8(gaussian(np.array(image) / 255., sigma=sigma, multichannel=True) * 255)
    for _ in range(iterations):
        pixels = shuffle_pixels(pixels, delta)
    return np.clip(gaussian(pixels / 255., sigma=sigma, multichannel=True), 0, 1) * 255


def shuffle_pixels(pixels: np.ndarray, delta: int) -> np.ndarray:
    """One pass of the package's local pixel shuffle, drawing from NumPy's global random state."""
    height, width = pixels.shape[:2]
    rows, columns = np.arange(height - delta, delta, -1), np.arange(width - delta, delta, -1)
    count = len(rows) * len(columns)
    if count == 0:
        return pixels
    offsets = np.random.randint(-delta, delta, size=(count, 2))  # (dx, dy) per pixel, in visiting order
    row = np.repeat(rows, len(columns))
    column = np.tile(columns, len(rows))
    source_row, source_column = row + offsets[:, 1], column + offsets[:, 0]
    visit = np.full((height, width), -1, dtype=np.int64)  # visiting order of each pixel, -1 outside the walk
    visit[row, column] = np.arange(count)
    source_visit = visit[source_row, source_column]
    # A pixel whose source was visited before it takes that source's new value: follow the chain.
    order = np.arange(count)
    link = np.where((source_visit >= 0) & (source_visit < order), source_visit, order)
    while True:
        jumped = link[link]
        if np.array_equal(jumped, link):
            break
        link = jumped
    # The end of each chain reads its source as it was before this pass.
    flat = pixels.reshape(height * width, -1)
    values = flat[(source_row * width + source_column)[link]]
    shuffled = pixels.copy()
    shuffled[row, column] = values.reshape(count, *pixels.shape[2:])
    return shuffled
