"""Training samplers: a random one and the identity (P x K) sampler.

Both are seeded per epoch (the order of epoch e depends only on the seed and e), split
one epoch order into disjoint equal shares across distributed ranks, and resume mid-epoch:
`state_dict()` records the epoch and how many samples of it were consumed, and after
`load_state_dict()` the next iteration skips exactly those, reproducing the rest of the
epoch. The loaders in `igoas.data.loaders` report consumption as batches are delivered.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from igoas.data.base import Sample
from igoas.utils.errors import ConfigError

LOG = logging.getLogger(__name__)


class EpochSampler(Sampler[int]):
    """What both samplers share: epoch seeding, rank share, consumption and resume."""

    kind = "base"

    def __init__(self, num_samples: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ConfigError(f"sampler rank {rank} is not within world_size {world_size}.")
        self.num_samples, self.seed, self.rank, self.world_size = num_samples, int(seed), rank, world_size
        self.epoch = 0
        self._consumed = 0  # samples of the current epoch handed out as batches
        self._skip = 0  # samples the next iteration skips (set by load_state_dict)
        self._cache: tuple[int, list[int]] | None = None
        self.restart_reason: str | None = None  # set by load_state_dict when the saved position is dropped

    def epoch_order(self) -> list[int]:
        """This rank's indices for the current epoch, in order."""
        raise NotImplementedError

    def _order(self) -> list[int]:
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self.epoch_order())
        return self._cache[1]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; a new epoch starts from its beginning."""
        if epoch != self.epoch:
            self.epoch, self._consumed, self._skip = int(epoch), 0, 0

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        start, self._skip = self._skip, 0
        self._consumed = start
        return iter(order[start:])

    def __len__(self) -> int:
        return len(self._order()) - self._skip

    def mark_consumed(self, count: int) -> None:
        """Record that `count` more samples of this epoch were delivered to training."""
        self._consumed = min(self._consumed + count, len(self._order()))

    def state_dict(self) -> dict:
        # epoch_length: the identity sampler's order can be longer than the dataset (identities
        # with fewer than K images are padded), so positions are checked against it
        return {"kind": self.kind, "epoch": self.epoch, "consumed": self._consumed, "seed": self.seed,
                "world_size": self.world_size, "num_samples": self.num_samples, "epoch_length": len(self._order())}

    def load_state_dict(self, state: dict) -> None:
        """Resume: the saved epoch, seed and position. With another sampler, world size,
        dataset size or epoch order the saved position means nothing, so the saved epoch
        restarts from its beginning and `restart_reason` says why (None: position kept)."""
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])
        self._cache = None
        if self.epoch < 0:
            raise ValueError(f"sampler epoch {self.epoch} is negative")
        length = len(self._order())
        current = {"kind": self.kind, "world_size": self.world_size, "num_samples": self.num_samples,
                   "epoch_length": length}
        # states written by earlier versions have no epoch_length: nothing to compare it with
        changed = [key for key, value in current.items()
                   if state.get(key, value if key == "epoch_length" else None) != value]
        self.restart_reason = None
        if changed:
            self.restart_reason = "sampler state saved with another " + ", ".join(
                f"{key} ({state.get(key)} -> {current[key]})" for key in changed)
            LOG.warning("%s; epoch %d restarts from its beginning", self.restart_reason, self.epoch + 1)
        elif not 0 <= int(state["consumed"]) <= length:
            raise ValueError(f"sampler position out of range: epoch {self.epoch + 1}, {state['consumed']} of "
                             f"{length} samples of the epoch order consumed")
        self._skip = 0 if changed else int(state["consumed"])
        self._consumed = self._skip


class RandomTrainSampler(EpochSampler):
    """A random permutation of the samples per epoch; rank r takes every world_size-th
    entry, after dropping the few that would make the shares unequal."""

    kind = "random"

    def __init__(self, samples: Sequence[Sample], seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(len(samples), seed, rank, world_size)

    def epoch_order(self) -> list[int]:
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        usable = self.num_samples - self.num_samples % self.world_size
        return perm[self.rank:usable:self.world_size].tolist()


class RandomIdentitySampler(EpochSampler):
    """P identities x K instances per batch (batch_size = P * K), no identity twice in a batch.

    Per epoch, each identity's images are shuffled and cut into groups of K (an identity
    with fewer than K images is sampled with replacement up to K); batches then draw P
    identities that still have groups, until fewer than P remain. Every image is used at
    most once per epoch apart from those repeats; the leftovers (< K per identity) wait
    for another epoch's shuffle. Ranks take every world_size-th batch.
    """

    kind = "identity"

    def __init__(self, samples: Sequence[Sample], batch_size: int, num_instances: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if num_instances < 1 or batch_size % num_instances:
            raise ConfigError(f"identity sampler: batch_size {batch_size} must be a multiple of "
                              f"num_instances {num_instances} (batch = P identities x K instances).")
        super().__init__(len(samples), seed, rank, world_size)
        self.num_instances, self.num_identities = num_instances, batch_size // num_instances
        by_pid: dict[int, list[int]] = {}
        for index, sample in enumerate(samples):
            by_pid.setdefault(sample.pid, []).append(index)
        self.by_pid = dict(sorted(by_pid.items()))
        if len(self.by_pid) < self.num_identities:
            raise ConfigError(f"identity sampler: a batch needs {self.num_identities} identities but the "
                              f"training set has {len(self.by_pid)}; lower batch_size or raise num_instances.")

    def epoch_batches(self) -> list[list[int]]:
        """All batches of the epoch (every rank's), in order."""
        rng = np.random.default_rng([self.seed, self.epoch])
        k = self.num_instances
        groups: dict[int, deque] = {}
        for pid, indices in self.by_pid.items():
            order = rng.permutation(indices) if len(indices) >= k else rng.choice(indices, size=k, replace=True)
            groups[pid] = deque(order[i:i + k].tolist() for i in range(0, len(order) - len(order) % k, k))
        available = [pid for pid in self.by_pid if groups[pid]]
        batches = []
        while len(available) >= self.num_identities:
            chosen = rng.choice(len(available), size=self.num_identities, replace=False)
            batch = []
            for i in chosen:
                batch += groups[available[i]].popleft()
            batches.append(batch)
            available = [pid for pid in available if groups[pid]]
        return batches

    def epoch_order(self) -> list[int]:
        batches = self.epoch_batches()
        usable = len(batches) - len(batches) % self.world_size
        return [index for batch in batches[self.rank:usable:self.world_size] for index in batch]
