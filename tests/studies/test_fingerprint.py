"""Config fingerprints decide when a finished run or trunk is reused: both ways of getting
that wrong (reusing a run trained otherwise, refusing a run trained the same) are tested."""
from __future__ import annotations

import copy

from igoas.config import load_config, to_dict
from igoas.studies.fingerprint import differences, fingerprint, same_recipe


def _recipe(*overrides: str) -> dict:
    return fingerprint(load_config("synthetic_pretrain", list(overrides)))


def test_keys_added_to_free_form_sections_are_differences() -> None:
    changed = _recipe("data.augment.random_erasing=0.5", "model.options.global_pooling=max", "data.options.foo=1")
    assert differences(_recipe(), changed) == [
        "data.augment.random_erasing: None -> 0.5", "data.options.foo: None -> 1",
        "model.options.global_pooling: None -> 'max'"]
    assert not same_recipe(_recipe(), changed)


def test_runtime_keys_are_no_difference_even_in_a_saved_full_config() -> None:
    chunked = load_config("synthetic_pretrain", ["train.stop_after_iters=10", "train.checkpoint_every_iters=5",
                                                 "train.cpu_threads=1", "eval.batch_size=7", "train.output_dir=x"])
    saved_in_full = to_dict(chunked)  # as a run folder's config.yaml holds it, runtime keys included
    assert differences(saved_in_full, _recipe()) == [] and differences(_recipe(), saved_in_full) == []


def test_an_option_newer_than_the_saved_config_counts_only_when_changed() -> None:
    old = copy.deepcopy(_recipe())
    del old["loss"]["mask_loss_global"]  # saved before the option existed: it ran as the default does
    assert same_recipe(old, _recipe())
    assert differences(old, _recipe("loss.mask_loss_global=false")) == ["loss.mask_loss_global: None -> False"]


def test_changed_values_are_named() -> None:
    assert differences(_recipe(), _recipe("optim.lr=0.002")) == ["optim.lr: 0.001 -> 0.002"]
