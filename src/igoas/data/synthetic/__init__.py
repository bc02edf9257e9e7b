"""The embedded synthetic occluded-pedestrian dataset: rendered with numpy and Pillow,
written in the Market-1501 layout and read back by the Market-1501 loader."""
from __future__ import annotations

from pathlib import Path

from igoas.data.base import NamePattern, ReIDDataset, make_samples, scan_folder
from igoas.data.market1501 import MARKET_PATTERN, read_market_layout
from igoas.data.synthetic.occluders import OCCLUDER_KINDS, draw_occluder
from igoas.data.synthetic.writer import HOLISTIC_FOLDER, SIZES, read_meta, render_synthetic
from igoas.utils.errors import DatasetError

__all__ = ["OCCLUDER_KINDS", "SIZES", "draw_occluder", "read_meta", "render_synthetic", "synthetic"]

SYNTHETIC_PATTERN = NamePattern(MARKET_PATTERN.regex, MARKET_PATTERN.form, "0001_c1s1_001234_00.jpg")


def synthetic(root: str | Path, *, render: bool = False, num_ids: int | None = None, seed: int = 0,
              size: str = "default", image_size: tuple[int, int] = (128, 64), strict: bool = True) -> ReIDDataset:
    """Read a rendered synthetic set (rendering it first when `render` is true).

    The holistic twins of the queries come as `extra_queries["holistic"]`, ranked against
    the same gallery, so occluded and holistic results are directly comparable.
    """
    if render:
        render_synthetic(root, num_ids=num_ids, seed=seed, size=size, image_size=image_size)
    root = Path(root).expanduser().absolute()
    meta = read_meta(root)
    if meta is None:
        raise DatasetError(f"synthetic: {root / 'meta.json'} is missing or not written by igoas; render the "
                           f"set first with `igoas data synth {root}` (or build_dataset(..., render=True)).")
    params = meta["params"]
    dataset = read_market_layout("synthetic", root, SYNTHETIC_PATTERN, strict=strict, protocol_info={
        "protocol": "same_camera", "synthetic_seed": params["seed"], "synthetic_version": params["version"],
        "synthetic_size": params["size"], "synthetic_num_ids": params["num_ids"]})
    holistic, unparsed = scan_folder(root / HOLISTIC_FOLDER, SYNTHETIC_PATTERN)
    dataset.extra_queries = {"holistic": make_samples(holistic)}
    dataset.unparsed_files += unparsed
    return dataset
