"""DukeMTMC-reID and Occluded-DukeMTMC: Market layout, names `PPPP_cC_fFFFFFFF.jpg`, 8 cameras.

DukeMTMC was withdrawn by its creators in 2019; these readers serve users who hold a copy.
"""
from __future__ import annotations

from pathlib import Path

from igoas.data.base import NamePattern, ReIDDataset
from igoas.data.layout import locate_root
from igoas.data.market1501 import MARKET_PATTERN, MARKET_SPLITS, read_market_layout

DUKE_PATTERN = NamePattern(MARKET_PATTERN.regex, "PPPP_cC_fFFFFFFF.jpg (identity, camera, frame)", "0001_c2_f0046182.jpg")
DUKE_CANDIDATES = ("dukemtmc-reid/DukeMTMC-reID", "DukeMTMC-reID", "dukemtmc-reid", "dukemtmcreid", "")
OCCLUDED_DUKE_CANDIDATES = ("occluded-duke/Occluded_Duke", "Occluded_Duke", "occluded-duke", "occluded_duke", "")
PUBLISHED_DUKE = {"train": (702, 16522), "query": (702, 2228), "gallery": (1110, 17661)}
PUBLISHED_OCCLUDED_DUKE = {"train": (702, 15618), "query": (519, 2210), "gallery": (1110, 17661)}


def dukemtmcreid(root: str | Path, *, strict: bool = True) -> ReIDDataset:
    """DukeMTMC-reID, same-camera protocol."""
    folder = locate_root(root, "dukemtmcreid", DUKE_CANDIDATES, MARKET_SPLITS)
    return read_market_layout("dukemtmcreid", folder, DUKE_PATTERN, strict=strict)


def occluded_duke(root: str | Path, *, strict: bool = True) -> ReIDDataset:
    """Occluded-DukeMTMC (every query occluded), the paper's main benchmark."""
    folder = locate_root(root, "occluded_duke", OCCLUDED_DUKE_CANDIDATES, MARKET_SPLITS)
    return read_market_layout("occluded_duke", folder, DUKE_PATTERN, strict=strict)
