"""DataLoaders for training and testing, built from lists of samples.

The training loader delivers batches from a resumable sampler and reports each delivered
batch to it, so `loader.sampler.state_dict()` taken between steps records exactly where
training stands in the epoch (prefetching workers do not count: only delivered batches do).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader

from igoas.data.base import Sample
from igoas.data.image_dataset import ImageDataset, collate_skipping_failed
from igoas.data.samplers import EpochSampler, RandomIdentitySampler, RandomTrainSampler
from igoas.data.transforms import build_transforms
from igoas.utils.errors import ConfigError

SAMPLERS: dict[str, Callable[..., EpochSampler]] = {
    "random": lambda samples, batch_size, num_instances, **kw: RandomTrainSampler(samples, **kw),
    "identity": lambda samples, batch_size, num_instances, **kw: RandomIdentitySampler(
        samples, batch_size, num_instances, **kw),
}


class ResumableDataLoader(DataLoader):
    """A DataLoader whose sampler learns how many samples each delivered batch used."""

    def __iter__(self) -> Iterator:
        for batch in super().__iter__():
            self.sampler.mark_consumed(self.batch_size)
            yield batch


def _worker_options(num_workers: int, persistent_workers: bool | None, prefetch_factor: int | None) -> dict:
    if num_workers <= 0:
        return {"num_workers": 0}
    options = {"num_workers": num_workers, "persistent_workers": True if persistent_workers is None else persistent_workers}
    if prefetch_factor is not None:
        options["prefetch_factor"] = prefetch_factor
    return options


def build_train_loader(
    dataset_samples: Sequence[Sample],
    batch_size: int,
    sampler: str = "random",
    num_instances: int = 4,
    num_workers: int = 2,
    pin_memory: bool = False,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
    *,
    transform: Callable | None = None,
    height: int = 384,
    width: int = 128,
    on_error: str = "skip",
    persistent_workers: bool | None = None,
    prefetch_factor: int | None = None,
) -> ResumableDataLoader:
    """The training loader: `sampler` "random" or "identity" (P x K with K = num_instances),
    the training transforms at height x width unless `transform` is given, corrupt
    images skipped (or failing, `on_error="fail"`). `batch_size` is per rank."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}.")
    if not dataset_samples:
        raise ConfigError("the training set is empty: no training image was given.")
    order = SAMPLERS[sampler](dataset_samples, batch_size, num_instances, seed=seed, rank=rank, world_size=world_size)
    images = ImageDataset(dataset_samples, transform or build_transforms(height, width, train=True), on_error=on_error)
    return ResumableDataLoader(
        images, batch_size=batch_size, sampler=order, drop_last=drop_last, pin_memory=pin_memory,
        collate_fn=collate_skipping_failed, generator=torch.Generator().manual_seed(seed * 1000 + rank),
        **_worker_options(num_workers, persistent_workers, prefetch_factor),
    )


def build_test_loader(
    samples: Sequence[Sample],
    batch_size: int = 128,
    num_workers: int = 2,
    pin_memory: bool = False,
    *,
    transform: Callable | None = None,
    height: int = 384,
    width: int = 128,
    on_error: str = "fail",
) -> DataLoader:
    """The evaluation loader: samples in order, nothing dropped. A corrupt image fails by
    default, because silently ranking against a smaller gallery changes the metrics."""
    images = ImageDataset(samples, transform or build_transforms(height, width, train=False), on_error=on_error)
    return DataLoader(images, batch_size=batch_size, shuffle=False, drop_last=False, pin_memory=pin_memory,
                      collate_fn=collate_skipping_failed, **_worker_options(num_workers, False, None))
