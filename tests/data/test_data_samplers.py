"""Samplers: coverage per epoch, P x K batches, rank shares and exact mid-epoch resume."""
from __future__ import annotations

import logging
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igoas.data import RandomIdentitySampler, RandomTrainSampler, Sample
from igoas.data.loaders import ResumableDataLoader
from igoas.utils.errors import ConfigError


def samples_with(counts: list[int]) -> list[Sample]:
    """Identity i has counts[i] images."""
    return [Sample(f"{pid}_{k}.jpg", pid, k % 3) for pid, n in enumerate(counts) for k in range(n)]


def batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i:i + size] for i in range(0, len(order) - len(order) % size, size)]


def test_random_sampler_covers_every_sample_once_and_reshuffles_per_epoch() -> None:
    sampler = RandomTrainSampler(samples_with([5] * 20), seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(100))
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(second) == list(range(100)) and second != first
    sampler.set_epoch(0)
    assert list(sampler) == first  # the order depends on seed and epoch only
    assert list(RandomTrainSampler(samples_with([5] * 20), seed=4)) != first


@settings(max_examples=40, deadline=None)
@given(num_samples=st.integers(1, 300), world_size=st.integers(1, 5), epoch=st.integers(0, 3))
def test_random_sampler_ranks_take_disjoint_equal_shares(num_samples: int, world_size: int, epoch: int) -> None:
    data = samples_with([num_samples])
    shares = []
    for rank in range(world_size):
        sampler = RandomTrainSampler(data, seed=1, rank=rank, world_size=world_size)
        sampler.set_epoch(epoch)
        shares.append(list(sampler))
    flat = [i for share in shares for i in share]
    assert len(set(flat)) == len(flat) == num_samples - num_samples % world_size
    assert len({len(share) for share in shares}) == 1


@pytest.mark.parametrize("counts", [[6] * 10, [2, 9, 4, 4, 7, 1, 12, 5, 3, 8]])
def test_identity_sampler_gives_p_distinct_identities_times_k(counts: list[int]) -> None:
    data = samples_with(counts)
    p, k = 4, 4
    sampler = RandomIdentitySampler(data, batch_size=p * k, num_instances=k, seed=0)
    order = list(sampler)
    assert len(order) % (p * k) == 0 and len(order) == len(sampler) > 0
    for batch in batches(order, p * k):
        per_identity = Counter(data[i].pid for i in batch)
        assert len(per_identity) == p and set(per_identity.values()) == {k}
    uses = Counter(order)
    small = {pid for pid, n in enumerate(counts) if n < k}
    assert all(n == 1 for i, n in uses.items() if data[i].pid not in small)  # each image at most once per epoch


def test_identity_sampler_ranks_share_batches_of_one_epoch() -> None:
    data = samples_with([8] * 12)
    full = RandomIdentitySampler(data, 8, 4, seed=2).epoch_batches()
    shares = [batches(list(RandomIdentitySampler(data, 8, 4, seed=2, rank=r, world_size=3)), 8) for r in range(3)]
    assert len({len(s) for s in shares}) == 1
    assert [b for r in range(3) for b in shares[r]] != []
    assert sorted(map(tuple, sum(shares, []))) == sorted(map(tuple, full[: len(full) - len(full) % 3]))


def test_identity_sampler_rejects_impossible_batches() -> None:
    with pytest.raises(ConfigError, match="multiple"):
        RandomIdentitySampler(samples_with([4] * 8), batch_size=10, num_instances=4)
    with pytest.raises(ConfigError, match="identities"):
        RandomIdentitySampler(samples_with([4] * 3), batch_size=16, num_instances=4)
    with pytest.raises(ConfigError, match="rank"):
        RandomTrainSampler(samples_with([4]), rank=2, world_size=2)


def _loader(sampler, data: list[Sample], batch_size: int) -> ResumableDataLoader:
    return ResumableDataLoader(list(range(len(data))), batch_size=batch_size, sampler=sampler, drop_last=True)


@pytest.mark.parametrize("kind", ["random", "identity"])
@pytest.mark.parametrize("world_size", [1, 2])
def test_resume_mid_epoch_reproduces_the_rest_of_the_epoch(kind: str, world_size: int) -> None:
    data = samples_with([5, 7, 6, 8, 4, 9, 6, 5, 7, 8, 6, 5])

    def make(seed: int):
        if kind == "random":
            return RandomTrainSampler(data, seed=seed, rank=world_size - 1, world_size=world_size)
        return RandomIdentitySampler(data, 8, 4, seed=seed, rank=world_size - 1, world_size=world_size)

    reference = make(seed=5)
    reference.set_epoch(2)
    expected = [b.tolist() for b in _loader(reference, data, 8)]
    assert len(expected) >= 3
    interrupted = make(seed=5)
    interrupted.set_epoch(2)
    delivered = []
    for batch in _loader(interrupted, data, 8):
        delivered.append(batch.tolist())
        if len(delivered) == 2:
            break
    state = interrupted.state_dict()
    assert (state["epoch"], state["consumed"]) == (2, 16)
    resumed = make(seed=999)  # the checkpoint's seed wins
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # what a training loop does at the top of the epoch: no reset
    rest = [b.tolist() for b in _loader(resumed, data, 8)]
    assert delivered + rest == expected
    resumed.set_epoch(3)
    assert len([b for b in _loader(resumed, data, 8)]) == len(_loader(make(5), data, 8))  # next epoch is whole


def test_resume_with_another_world_size_restarts_the_epoch(caplog: pytest.LogCaptureFixture) -> None:
    data = samples_with([10] * 4)
    sampler = RandomTrainSampler(data, seed=1, world_size=2)
    sampler.set_epoch(4)
    sampler.mark_consumed(6)
    other = RandomTrainSampler(data, seed=1, world_size=1)
    with caplog.at_level(logging.WARNING):
        other.load_state_dict(sampler.state_dict())
    assert "world_size" in caplog.text and "epoch 5 restarts" in caplog.text  # epochs counted from 1, as logged
    assert other.epoch == 4 and len(list(other)) == 40 and "world_size (2 -> 1)" in other.restart_reason


def test_identity_sampler_resumes_past_the_dataset_size_in_its_padded_order() -> None:
    # identities with fewer than K images are padded: 40 x 2 images, K = 4 -> 160 per epoch
    data = samples_with([2] * 40)
    reference = RandomIdentitySampler(data, 8, 4, seed=3)
    reference.set_epoch(1)
    expected = [b.tolist() for b in _loader(reference, data, 8)]
    assert len(expected) * 8 == 160 > len(data)
    interrupted = RandomIdentitySampler(data, 8, 4, seed=3)
    interrupted.set_epoch(1)
    loader = iter(_loader(interrupted, data, 8))
    delivered = [next(loader).tolist() for _ in range(15)]
    state = interrupted.state_dict()
    assert (state["consumed"], state["epoch_length"]) == (120, 160)
    for saved in (state, {key: value for key, value in state.items() if key != "epoch_length"}):  # earlier format
        resumed = RandomIdentitySampler(data, 8, 4, seed=3)
        resumed.load_state_dict(saved)
        assert resumed.restart_reason is None
        assert delivered + [b.tolist() for b in _loader(resumed, data, 8)] == expected
    with pytest.raises(ValueError, match="161 of 160"):
        RandomIdentitySampler(data, 8, 4, seed=3).load_state_dict({**state, "consumed": 161})


def test_a_training_set_of_the_same_size_with_another_layout_restarts_the_epoch() -> None:
    sampler = RandomIdentitySampler(samples_with([2] * 40), 8, 4, seed=3)
    sampler.mark_consumed(40)
    other = RandomIdentitySampler(samples_with([4] * 20), 8, 4, seed=3)  # 80 images too, 80 per epoch
    other.load_state_dict(sampler.state_dict())
    assert "epoch_length (160 -> 80)" in other.restart_reason and len(list(other)) == 80
