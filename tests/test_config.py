"""Run configuration: presets, the published recipe, overrides and the errors users see."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from igoas.cli import main
from igoas.commands.arguments import split_config_and_overrides
from igoas.config import config_from_dict, load_config, preset_names, to_dict
from igoas.utils.errors import ConfigError

ABLATION = {
    "occluded_duke_baseline": {"name": "baseline", "occlusion": "none"},
    "occluded_duke_random_erasing": {"occlusion": "random_erasing"},
    "occluded_duke_batch_random_erasing": {"occlusion": "batch_random_erasing"},
    "occluded_duke_slow_dropblock": {"occlusion": "slow_dropblock"},
    "occluded_duke_batch_dropblock": {"occlusion": "batch_dropblock"},
    "occluded_duke_igo_fixed": {"occlusion": "igo_fixed"},
    "occluded_duke_no_osm": {"name": "igoas_no_osm"},
}


def test_every_required_preset_ships_and_loads() -> None:
    required = {"occluded_duke_igoas", "market1501_igoas", "dukemtmcreid_igoas", "occluded_reid_igoas",
                "synthetic_demo", "synthetic_demo_quick", "custom_igoas", *ABLATION}
    assert required <= set(preset_names())
    for name in preset_names():
        load_config(name)  # validates every value


def test_repository_configs_folder_shows_the_presets() -> None:
    folder = Path(__file__).resolve().parents[1] / "configs"
    assert (folder / "occluded_duke_igoas.yaml").is_file()


def test_published_recipe_is_exact() -> None:
    cfg = load_config("occluded_duke_igoas")
    assert (cfg.data.dataset, cfg.data.height, cfg.data.width) == ("occluded_duke", 384, 128)
    assert (cfg.data.sampler, cfg.data.batch_size, cfg.data.drop_last) == ("random", 64, True)
    assert to_dict(cfg.data.augment) == {"flip": 0.5}
    assert list(cfg.data.mean) == [0.485, 0.456, 0.406] and list(cfg.data.std) == [0.229, 0.224, 0.225]
    assert (cfg.model.name, cfg.model.backbone, cfg.model.pretrained, cfg.model.occlusion) == (
        "igoas", "resnet50", "imagenet1k_v1", "igo")
    assert cfg.loss.label_smoothing == 0.1 and cfg.loss.id_weighting == "adaptive"
    assert cfg.loss.mask_loss_weight == 1.0 and cfg.loss.mask_loss_global and cfg.loss.triplet is None
    assert (cfg.optim.name, cfg.optim.lr, list(cfg.optim.betas), cfg.optim.weight_decay) == (
        "adam", 3e-4, [0.9, 0.999], 5e-4)
    assert (cfg.optim.schedule, list(cfg.optim.milestones), cfg.optim.gamma, cfg.optim.warmup_epochs) == (
        "multi_step", [20, 40], 0.1, 0)
    assert (cfg.train.epochs, cfg.train.fixbase_epochs, cfg.train.fixbase_modules) == (90, 5, None)
    assert (cfg.eval.every, cfg.eval.metric, cfg.eval.rerank) == (4, "euclidean", False)


@pytest.mark.parametrize("preset", sorted(ABLATION))
def test_ablation_presets_change_only_the_method(preset: str) -> None:
    base, variant = to_dict(load_config("occluded_duke_igoas")), to_dict(load_config(preset))
    for section in ("data", "loss", "optim", "eval"):
        assert variant[section] == base[section]
    changed = {key: value for key, value in variant["model"].items() if base["model"][key] != value}
    changed.pop("occlusion_options", None)
    assert changed == ABLATION[preset]
    assert variant["train"]["output_dir"] != base["train"]["output_dir"]


def test_cross_dataset_preset_trains_on_market_and_tests_elsewhere() -> None:
    cfg = load_config("occluded_reid_igoas")
    assert cfg.data.dataset == "market1501"
    assert list(cfg.data.targets)[:2] == ["occluded_reid", "partial_reid"]


def test_checked_choices_are_the_engine_names() -> None:
    from igoas.config import CHOICES
    from igoas.data.loaders import SAMPLERS
    from igoas.training.optim import OPTIMIZERS, SCHEDULES

    assert set(CHOICES["data.sampler"]) == set(SAMPLERS)
    assert set(CHOICES["optim.name"]) == set(OPTIMIZERS)
    assert set(CHOICES["optim.schedule"]) == set(SCHEDULES)


def test_overrides_are_typed_and_nested() -> None:
    cfg = load_config("occluded_duke_igoas", ["optim.lr=0.01", "optim.milestones=[5,7]", "optim.grad_clip=2.5",
                                              "model.occlusion_options.fill=normalized", "loss.triplet=soft",
                                              "train.stop_after_iters=null"])
    assert cfg.optim.lr == 0.01 and list(cfg.optim.milestones) == [5, 7] and cfg.optim.grad_clip == 2.5
    assert cfg.model.occlusion_options.fill == "normalized" and cfg.loss.triplet == "soft"


def test_a_mapping_override_merges_and_an_empty_one_empties() -> None:
    preset = load_config("synthetic_study")
    merged = load_config("synthetic_study", ["model.occlusion_options={slope: 0.5}"])
    assert merged.model.occlusion_options == {**preset.model.occlusion_options, "slope": 0.5}
    emptied = load_config("synthetic_study", ["model.occlusion_options={}", "data.augment={}"])
    assert emptied.model.occlusion_options == {} and emptied.data.augment == {}
    assert preset.model.occlusion_options.slope == 0.02, "the preset itself is not changed"
    refilled = load_config("synthetic_study", ["model.occlusion_options={}", "model.occlusion_options.slope=0.1"])
    assert refilled.model.occlusion_options == {"slope": 0.1}
    later_empty = load_config("synthetic_study", ["model.occlusion_options={slope: 0.1}", "model.occlusion_options={}"])
    assert later_empty.model.occlusion_options == {}
    typed = load_config("synthetic_study", ["train={}", "model={}"])
    assert typed == preset, "an empty typed section changes nothing"


@pytest.mark.parametrize("override, words", [
    ("optim.lrr=0.1", ["optim.lrr", "unknown"]),
    ("optimizer.lr=0.1", ["optimizer", "unknown"]),
    ("optim.lr=fast", ["optim.lr", "fast"]),
    ("optim.name=adamw", ["optim.name", "adam, sgd"]),
    ("optim.lr=-1", ["optim.lr", "positive"]),
    ("data.batch_size=30", ["data.batch_size"]),  # not a multiple of K with the identity sampler below
    ("train.channels_last=sometimes", ["train.channels_last"]),
    ("optim.lr", ["key=value"]),
])
def test_bad_overrides_name_the_key(override: str, words: list[str]) -> None:
    extra = ["data.sampler=identity"] if override.startswith("data.batch_size") else []
    with pytest.raises(ConfigError) as info:
        load_config("occluded_duke_igoas", extra + [override])
    assert all(word in str(info.value) for word in words), str(info.value)


def test_yaml_file_extends_a_base_file_and_a_preset(tmp_path: Path) -> None:
    (tmp_path / "parent.yaml").write_text("base: occluded_duke_igoas\noptim:\n  lr: 0.002\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\ntrain:\n  epochs: 3\n")
    cfg = load_config(tmp_path / "child.yaml", ["train.seed=7"])
    assert (cfg.optim.lr, cfg.train.epochs, cfg.train.seed, cfg.data.dataset) == (0.002, 3, 7, "occluded_duke")


def test_switching_the_dataset_drops_the_previous_datasets_options(tmp_path: Path) -> None:
    """A synthetic preset's render/size/seed mean nothing to `custom` (nor to any other reader)."""
    assert to_dict(load_config("synthetic_demo", ["data.dataset=custom", "data.root=/x"]).data.options) == {}
    switched = load_config("synthetic_demo", ["data.options.size=tiny", "data.dataset=custom",
                                              "data.options.layout=lists"])
    assert to_dict(switched.data.options) == {"layout": "lists"}  # options given after the switch apply
    same = load_config("synthetic_demo", ["data.options.size=tiny", "data.dataset=synthetic"])
    assert to_dict(same.data.options)["size"] == "tiny"  # not a switch: nothing is dropped
    assert load_config("custom_igoas", ["data.root=/x"]).data.dataset == "custom"
    # in YAML: a file that switches the dataset of its base, and one that empties its base's options
    (tmp_path / "mine.yaml").write_text("base: synthetic_demo\ndata:\n  dataset: custom\n")
    assert to_dict(load_config(tmp_path / "mine.yaml").data.options) == {}
    (tmp_path / "cleared.yaml").write_text("base: synthetic_demo\ndata:\n  options: {}\n"
                                           "model:\n  occlusion_options: {slope: 0.2}\n")
    cleared = load_config(tmp_path / "cleared.yaml")
    assert to_dict(cleared.data.options) == {} and cleared.data.dataset == "synthetic"
    assert to_dict(cleared.model.occlusion_options)["start"] == 0.1  # a non-empty mapping still merges
    assert cleared.model.occlusion_options.slope == 0.2


def test_train_with_overrides_alone_uses_the_defaults(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default run folder, runs/igoas
    assert main(["train"]) == 2
    assert "give a config file or preset" in capsys.readouterr().err
    # overrides alone (no preset) are the defaults with those changes: here they reach the custom reader
    assert main(["train", "data.dataset=custom", "data.root=/no/such/folder", "train.device=cpu"]) == 2
    assert "custom: dataset root /no/such/folder does not exist" in capsys.readouterr().err


def test_bad_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "typo.yaml").write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml.*optim\.learning_rate"):
        load_config(tmp_path / "typo.yaml")
    with pytest.raises(ConfigError, match="presets:"):
        load_config("no_such_preset")


def test_plain_dict_round_trip() -> None:
    cfg = load_config("synthetic_demo", ["optim.lr=0.005"])
    again = config_from_dict(to_dict(cfg))
    assert OmegaConf.to_yaml(again) == OmegaConf.to_yaml(cfg)


def test_cli_keeps_a_leading_override_out_of_the_config_slot() -> None:
    assert split_config_and_overrides("optim.lr=1", ["a=2"]) == (None, ["optim.lr=1", "a=2"])
    assert split_config_and_overrides("preset", ["a=2"]) == ("preset", ["a=2"])


def test_cli_reports_config_errors_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "occluded_duke_igoas", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("igoas train: error:") and "optim.lrr" in err and "Traceback" not in err
    assert main(["train", "--presets"]) == 0
    assert "occluded_duke_igoas" in capsys.readouterr().out.split()


def test_corrupt_image_policy_is_a_checked_choice():
    assert load_config(None, ["data.on_error=fail"]).data.on_error == "fail"
    with pytest.raises(ConfigError, match="data.on_error"):
        load_config(None, ["data.on_error=ignore"])


def test_the_old_workers_key_is_refused_naming_num_workers() -> None:
    with pytest.raises(ConfigError, match="num_workers"):
        load_config("synthetic_demo_quick", ["data.workers=2"])
