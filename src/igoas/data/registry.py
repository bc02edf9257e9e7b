"""The dataset registry: each name's reader, and the split sizes the community reports for a
complete copy, so `build_dataset` and `data check` look both up in one place."""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from igoas.data.base import ReIDDataset
from igoas.data.cuhk03 import PUBLISHED as _CUHK03_PUBLISHED
from igoas.data.cuhk03 import cuhk03_np
from igoas.data.custom import custom
from igoas.data.duke import PUBLISHED_DUKE, PUBLISHED_OCCLUDED_DUKE, dukemtmcreid, occluded_duke
from igoas.data.market1501 import PUBLISHED as _MARKET_PUBLISHED
from igoas.data.market1501 import market1501
from igoas.data.msmt17 import PUBLISHED as _MSMT17_PUBLISHED
from igoas.data.msmt17 import msmt17
from igoas.data.occluded_reid import PUBLISHED as _OCCLUDED_REID_PUBLISHED
from igoas.data.occluded_reid import occluded_reid
from igoas.data.p_dukemtmc import PUBLISHED as _P_DUKE_PUBLISHED
from igoas.data.p_dukemtmc import p_dukemtmc
from igoas.data.partial import PUBLISHED_PARTIAL_ILIDS, PUBLISHED_PARTIAL_REID, partial_ilids, partial_reid
from igoas.data.synthetic import synthetic
from igoas.utils.errors import ConfigError

DATASETS: dict[str, Callable[..., ReIDDataset]] = {
    "market1501": market1501,
    "dukemtmcreid": dukemtmcreid,
    "occluded_duke": occluded_duke,
    "msmt17": msmt17,
    "cuhk03_np": cuhk03_np,
    "occluded_reid": occluded_reid,
    "partial_reid": partial_reid,
    "partial_ilids": partial_ilids,
    "p_dukemtmc": p_dukemtmc,
    "custom": custom,
    "synthetic": synthetic,
}

# name -> options -> split -> (identities, images) the community reports for a complete copy
PUBLISHED_STATISTICS: dict[str, Callable[..., dict | None]] = {
    "market1501": lambda distractors_500k=False, **_: None if distractors_500k else _MARKET_PUBLISHED,
    "dukemtmcreid": lambda **_: PUBLISHED_DUKE,
    "occluded_duke": lambda **_: PUBLISHED_OCCLUDED_DUKE,
    "msmt17": lambda combine_train_val=True, **_: _MSMT17_PUBLISHED if combine_train_val else None,
    "cuhk03_np": lambda variant="detected", **_: _CUHK03_PUBLISHED.get(variant),
    "occluded_reid": lambda split="standard", **_: _OCCLUDED_REID_PUBLISHED.get(split),
    "partial_reid": lambda **_: PUBLISHED_PARTIAL_REID,
    "partial_ilids": lambda **_: PUBLISHED_PARTIAL_ILIDS,
    "p_dukemtmc": lambda **_: _P_DUKE_PUBLISHED,
}


def build_dataset(name: str, root: str | Path, **options: Any) -> ReIDDataset:
    """Read dataset `name` from `root`; options go to its reader (e.g. split="half" for
    occluded_reid, variant="labeled" for cuhk03_np, strict=False to skip unparsable names)."""
    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.{hint}")
    builder = DATASETS[name]
    accepted = [p for p in inspect.signature(builder).parameters if p != "root"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"dataset {name!r} has no option(s) {', '.join(unknown)}; "
                          f"it accepts {', '.join(accepted) or 'none'}.")
    return builder(root, **options)


def published_statistics(name: str, **options: Any) -> dict[str, tuple[int, int]] | None:
    """The (identities, images) per split of a complete copy, where the community reports them."""
    known = PUBLISHED_STATISTICS.get(name)
    return known(**options) if known else None
