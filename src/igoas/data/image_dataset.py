"""A torch Dataset over a list of samples, with a policy for images that fail to load.

Policy "skip": the failure is logged once with the file's path and the item comes back as
None; `collate_skipping_failed` leaves such items out, so that batch is one image smaller
and training goes on (a batch with no image left is an error: the copy is broken, not
one file). Policy "fail": a DatasetError naming the file stops the run.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset, default_collate

from igoas.data.base import Sample
from igoas.imaging.images import BACKENDS, max_image_pixels, read_image
from igoas.utils.errors import DatasetError

LOG = logging.getLogger(__name__)
ON_ERROR = ("skip", "fail")


class ImageDataset(Dataset):
    """Items are dicts: image (transformed), pid, camid, path and index in `samples`."""

    def __init__(self, samples: Sequence[Sample], transform: Callable | None = None, on_error: str = "skip",
                 backend: str = "auto") -> None:
        if on_error not in ON_ERROR:
            raise DatasetError(f"on_error must be one of {ON_ERROR}, not {on_error!r}.")
        if backend not in BACKENDS:
            raise DatasetError(f"backend must be one of {BACKENDS}, not {backend!r}.")
        max_image_pixels()  # a bad IGOAS_MAX_IMAGE_PIXELS stops here, not as a skip of every image
        self.samples = list(samples)
        self.transform = transform
        self.on_error = on_error
        self.backend = backend
        self._reported: set[str] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict | None:
        sample = self.samples[index]
        try:
            image = read_image(sample.path, self.backend)
        except Exception as err:  # any decoder error: corrupt, truncated, missing, unknown format
            if self.on_error == "fail":
                raise DatasetError(f"cannot read image {sample.path}: {err}. Run `igoas data check` on the "
                                   "dataset, or set on_error='skip' to train without it.") from err
            if sample.path not in self._reported:
                self._reported.add(sample.path)
                LOG.warning("skipping unreadable image %s (%s)", sample.path, err)
            return None
        if self.transform is not None:
            image = self.transform(image)
        if isinstance(image, torch.Tensor):
            image = image.as_subclass(torch.Tensor)  # plain tensors downstream, not tv_tensors.Image
        return {"image": image, "pid": sample.pid, "camid": sample.camid, "path": sample.path, "index": index}


def collate_skipping_failed(items: list[dict | None]) -> dict:
    """default_collate over the items that loaded."""
    loaded = [item for item in items if item is not None]
    if not loaded:
        raise DatasetError(f"every image of a batch of {len(items)} failed to load (see the warnings above for "
                           "their paths); the dataset copy looks broken: run `igoas data check` on it.")
    return default_collate(loaded)
