"""Rain, the benchmark's twentieth corruption (Chen et al., NeurIPS 2021 Datasets and
Benchmarks; MinghuiChen43/CIL-ReID, `datasets/make_dataloader.py`, function `rain`).

The benchmark builds it from albumentations 0.5.2: `RandomRain` (slant drawn in
[-10, 10), drops of width 1 and colour (200, 200, 200), rain type drizzle at severity 1,
heavy at 2-3, torrential at 4-5, box blur of side 2 + severity, brightness coefficient 1)
followed by `RandomBrightness` with both limits at -(0.05 + 0.05 severity), and first
enlarges images no taller than 60 pixels to a height of 65. The same steps are written
out here with OpenCV (a dependency of the `corruptions` extra), drawing their randomness
from NumPy's global state so that one seed reproduces an image, like the other 19.
"""
from __future__ import annotations

import numpy as np

# rain type -> (image area per drop, drop length in pixels), as albumentations' RandomRain
RAIN_TYPES = {"drizzle": (770, 10), "heavy": (600, 30), "torrential": (500, 60)}
SEVERITY_RAIN_TYPE = {1: "drizzle", 2: "heavy", 3: "heavy", 4: "torrential", 5: "torrential"}
SLANT_RANGE = (-10, 10)
DROP_COLOUR = (200, 200, 200)
DROP_WIDTH = 1
MIN_HEIGHT, ENLARGED_HEIGHT = 60, 65


def rain(image: np.ndarray, severity: int = 1) -> np.ndarray:
    """An H x W x 3 uint8 image with rain at `severity` 1-5 (taller, for images of 60 rows or fewer)."""
    import cv2

    height, width = image.shape[:2]
    if height <= MIN_HEIGHT:
        width = int(width * ENLARGED_HEIGHT / height)
        height = ENLARGED_HEIGHT
        image = np.asarray(_pil_resize(image, width, height))
    per_drop, length = RAIN_TYPES[SEVERITY_RAIN_TYPE[severity]]
    slant = int(np.random.uniform(*SLANT_RANGE))
    rainy = np.ascontiguousarray(image, dtype=np.uint8).copy()
    for _ in range(height * width // per_drop):
        # start points: inclusive ranges, keeping the slanted drop's far end inside the image
        x = int(np.random.randint(slant, width + 1)) if slant < 0 else int(np.random.randint(0, width - slant + 1))
        y = int(np.random.randint(0, height - length + 1))
        cv2.line(rainy, (x, y), (x + slant, y + length), DROP_COLOUR, DROP_WIDTH)
    blur = 2 + severity
    rainy = cv2.blur(rainy, (blur, blur))
    # brightness coefficient 1 keeps V, but the benchmark's HSV round trip is part of its pixels
    rainy = cv2.cvtColor(cv2.cvtColor(rainy, cv2.COLOR_RGB2HSV), cv2.COLOR_HSV2RGB)
    shift = -(0.05 + 0.05 * severity) * 255.0
    table = np.clip(np.arange(256, dtype=np.float32) + shift, 0, 255).astype(np.uint8)
    return cv2.LUT(rainy, table)


def _pil_resize(image: np.ndarray, width: int, height: int) -> "object":
    from PIL import Image

    return Image.fromarray(image).resize((width, height))
