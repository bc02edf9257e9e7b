"""CUHK03-NP (the new 767/700 protocol): a Market-layout copy per box kind, 2 cameras."""
from __future__ import annotations

from pathlib import Path

from igoas.data.base import NamePattern, ReIDDataset
from igoas.data.layout import locate_root
from igoas.data.market1501 import MARKET_PATTERN, MARKET_SPLITS, read_market_layout
from igoas.utils.errors import DatasetError

CUHK03_PATTERN = NamePattern(MARKET_PATTERN.regex, "PPPP_cC_N.png (identity, camera, image)", "0001_c1_1.png")
VARIANTS = ("detected", "labeled")
# (confirm): the usual figures, not checked against a copy here.
PUBLISHED = {
    "detected": {"train": (767, 7365), "query": (700, 1400), "gallery": (700, 5332)},
    "labeled": {"train": (767, 7368), "query": (700, 1400), "gallery": (700, 5328)},
}


def cuhk03_np(root: str | Path, *, variant: str = "detected", strict: bool = True) -> ReIDDataset:
    """CUHK03-NP with `variant` "detected" (detector boxes) or "labeled" (hand-drawn boxes)."""
    if variant not in VARIANTS:
        raise DatasetError(f"cuhk03_np: variant {variant!r} is not one of {VARIANTS}.")
    candidates = (f"cuhk03-np/{variant}", f"cuhk03_np/{variant}", variant, "")
    folder = locate_root(root, f"cuhk03_np ({variant})", candidates, MARKET_SPLITS)
    dataset = read_market_layout("cuhk03_np", folder, CUHK03_PATTERN, strict=strict)
    dataset.protocol_info["variant"] = variant
    return dataset
