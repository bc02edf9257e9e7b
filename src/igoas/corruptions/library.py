"""The `imagecorruptions` package (the `corruptions` extra), made importable on current
NumPy, SciPy and scikit-image.

imagecorruptions 1.1.2 (2020, its latest release) is used as published; four names it
looks up in its own module are pointed at compatible equivalents, and nothing outside
that module is changed:

- `pkg_resources.resource_filename` (gone with setuptools 81+): a stand-in module is
  present only while imagecorruptions is imported, and resolves the frost textures
  beside its source file as pkg_resources did;
- `skimage.filters.gaussian(..., multichannel=True)` (removed in scikit-image 0.19):
  forwarded as `channel_axis=-1`, the same filter;
- `np.float_` (removed in NumPy 2.0): the module sees a view of NumPy where it is
  `np.float64`, the same type;
- `skimage.util.random_noise` draws from a fresh unseeded generator since scikit-image
  0.21 (impulse noise): the module's calls get a generator seeded from NumPy's global
  state, so seeding that state makes every corruption reproducible, as it did before.

SciPy's `scipy.ndimage.interpolation` namespace, which imagecorruptions imports, exists
until SciPy 2.0: the extra pins `scipy<2`.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from igoas.utils.extras import optional

NEEDED_BY = "the corruption benchmark"


@functools.cache
def imagecorruptions() -> types.ModuleType:
    """The imagecorruptions package, shimmed for current libraries; a clear error when it is missing."""
    for dependency in ("cv2", "skimage"):  # imagecorruptions' own, checked here for a clear message
        optional(dependency, NEEDED_BY)
    stand_in = None
    if importlib.util.find_spec("pkg_resources") is None:
        stand_in = types.ModuleType("pkg_resources")
        stand_in.resource_filename = _resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = stand_in
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # its scipy.ndimage.interpolation import
            package = optional("imagecorruptions", NEEDED_BY)
            module = optional("imagecorruptions.corruptions", NEEDED_BY)
    finally:
        if stand_in is not None and sys.modules.get("pkg_resources") is stand_in:
            del sys.modules["pkg_resources"]
    _patch(module)
    return package


def _resource_filename(module_name: str, relative: str) -> str:
    """pkg_resources' lookup: `relative` beside the module's file (inside it, for a package)."""
    return str(Path(sys.modules[module_name].__file__).parent / relative)


def _patch(module: types.ModuleType) -> None:
    gaussian = optional("skimage.filters", NEEDED_BY).gaussian
    random_noise = optional("skimage.util", NEEDED_BY).random_noise

    def gaussian_compatible(image: Any, sigma: Any = 1, multichannel: bool | None = None, **options: Any) -> Any:
        if multichannel:
            options["channel_axis"] = -1
        return gaussian(image, sigma=sigma, **options)

    def seeded_random_noise(image: Any, mode: str = "gaussian", **options: Any) -> Any:
        options.setdefault("rng", np.random.randint(2**31))
        return random_noise(image, mode=mode, **options)

    numpy_view = _ModuleView(np, float_=np.float64)
    util_view = _ModuleView(module.sk.util, random_noise=seeded_random_noise)
    module.gaussian = gaussian_compatible
    module.np = numpy_view
    module.sk = _ModuleView(module.sk, util=util_view)


class _ModuleView(types.ModuleType):
    """A module seen through a few replaced attributes; everything else is the module's own."""

    def __init__(self, base: types.ModuleType, **replaced: Any) -> None:
        super().__init__(base.__name__)
        self._base = base
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)
