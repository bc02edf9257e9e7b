"""Synthetic pretraining: the exported trunk, the identity check and the cache."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import igoas.studies.pretrain
from igoas.config import load_config
from igoas.data import render_synthetic
from igoas.utils.errors import ConfigError
from igoas.studies.fingerprint import fingerprint
from igoas.model import build_model
from igoas.studies.pretrain import PRESET, TRUNK_FILE, check_disjoint_identities, pretrain, trunk_state_dict

TINY_PRETRAIN = ("data.options.size=tiny", "data.height=64", "data.width=32", "data.batch_size=8", "train.epochs=1",
                 "optim.warmup_epochs=0", "eval.batch_size=64")


def test_trunk_loads_as_model_pretrained_into_both_stage4_copies(tmp_path: Path) -> None:
    source = build_model("baseline", num_classes=5, backbone="resnet18")
    path = tmp_path / TRUNK_FILE
    torch.save(trunk_state_dict(source), path)
    model = build_model("igoas", num_classes=7, backbone="resnet18", pretrained=str(path))
    assert torch.equal(model.stem[0].weight, source.stem[0].weight)
    assert torch.equal(model.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    for stage4 in (model.global_stage4, model.suppression_stage4):
        assert torch.equal(stage4[1].conv1.weight, source.global_stage4[1].conv1.weight)
        assert stage4[0].conv1.stride == (1, 1)  # the stride-1 stage 4 survives the loading
    with pytest.raises(Exception, match="do not match the backbone"):
        build_model("igoas", num_classes=7, backbone="resnet50", pretrained=str(path))
    # a whole igoas checkpoint works too: its trunk is taken, its heads left out
    from igoas.artifacts.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "last.pth", {"model_spec": source.spec, "model": source.state_dict()})
    from_checkpoint = build_model("igoas", num_classes=7, backbone="resnet18", pretrained=str(tmp_path / "last.pth"))
    assert torch.equal(from_checkpoint.global_stage4[0].conv1.weight, source.global_stage4[0].conv1.weight)


def test_population_must_not_share_identities_with_the_evaluated_sets(tmp_path: Path) -> None:
    same_seed = render_synthetic(tmp_path / "seed0", seed=0, size="tiny", image_size=(64, 32))
    with pytest.raises(ConfigError, match="seed 0"):
        check_disjoint_identities(same_seed)
    check_disjoint_identities(render_synthetic(tmp_path / "seed1000", seed=1000, size="tiny", image_size=(64, 32)))


class _ReachedTraining(Exception):
    """Raised by the stand-in trainer: pretraining got as far as training."""


def test_paths_reach_the_run_as_given_and_the_recipe_is_unchanged(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    given = []

    def fake_train(cfg, **kwargs):
        given.append(cfg)
        raise _ReachedTraining

    monkeypatch.setattr(igoas.studies.pretrain, "build_dataset", lambda *a, **k: None)
    monkeypatch.setattr(igoas.studies.pretrain, "check_disjoint_identities", lambda root: None)
    monkeypatch.setattr(igoas.studies.pretrain, "train", fake_train)
    out = tmp_path / "pt #1: yes"  # YAML would cut a comment here
    with pytest.raises(_ReachedTraining):
        pretrain(out, overrides=TINY_PRETRAIN, log=None)
    with pytest.raises(_ReachedTraining):  # an override still names another population folder
        pretrain(out, overrides=(*TINY_PRETRAIN, "data.root=/elsewhere"), log=None)
    assert given[0].train.output_dir == str(out / "run") and given[0].data.root == str(out / "data")
    assert given[1].train.output_dir == str(out / "run") and given[1].data.root == "/elsewhere"
    # what the cache compares is what the preset and the overrides describe, as before
    assert fingerprint(given[0]) == fingerprint(load_config(PRESET, TINY_PRETRAIN))


@pytest.mark.slow
def test_pretraining_is_cached_and_refuses_another_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = pretrain(tmp_path / "pt", overrides=TINY_PRETRAIN, log=None)
    assert first.trunk.is_file() and not first.reused and set(first.metrics) == {"query", "holistic"}

    monkeypatch.setattr(igoas.studies.pretrain, "train", lambda *a, **k: pytest.fail("a finished pretraining ran again"))
    again = pretrain(tmp_path / "pt", overrides=TINY_PRETRAIN, log=None)
    assert again.reused and again.trunk == first.trunk and again.metrics == first.metrics
    (tmp_path / "pt" / "pretrain.json").unlink()  # the record lost: the run folder is checked instead
    with pytest.raises(ConfigError, match="optim.lr"):
        pretrain(tmp_path / "pt", overrides=(*TINY_PRETRAIN, "optim.lr=0.5"), log=None)
