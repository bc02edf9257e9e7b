"""Kept so that `igoas.preprocess` imports keep working: the input recipe lives in `igoas.artifacts`."""
from igoas.artifacts.images import ImageInput, image_to_tensor, load_image, split_images  # noqa: F401
from igoas.artifacts.preprocess import Preprocess  # noqa: F401
