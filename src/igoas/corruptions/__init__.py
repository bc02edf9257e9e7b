"""Common image corruptions (blur, noise, weather, digital) for evaluating and training
with, following the corruption-invariant ReID benchmark (Chen et al., NeurIPS 2021).

Needs the optional extra `igoas[corruptions]` (the `imagecorruptions` package) as soon
as an image is corrupted; names and settings can be checked without it.
"""
from igoas.corruptions.apply import CORRUPTIONS, SEVERITIES, check_corruptions, corrupt, image_seed, random_corruption

__all__ = ["CORRUPTIONS", "SEVERITIES", "check_corruptions", "corrupt", "image_seed", "random_corruption"]
