"""The paper-table comparison: presets exist, runs are read and compared correctly."""
import hashlib
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import igoas.commands.reproduce
import igoas.model.pretrained
from igoas.cli import main
from igoas.config import load_config
from igoas.utils.errors import IgoasError
from igoas.studies.reproduce import OCCLUDED_DUKE_TRAJECTORY, TABLES, compare_run, match_runs, table_rows


def _write_run(tmp_path, records):
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return tmp_path


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_row_names_a_loadable_preset_that_evaluates_its_dataset(table):
    for row in table_rows(table):
        config = load_config(row.preset)
        evaluated = list(config.data.targets) or [config.data.dataset]
        assert row.dataset in evaluated, (row.preset, evaluated)


def test_table_names_are_forgiving_but_unknown_ones_are_refused():
    assert table_rows("1") == table_rows("table1") == table_rows("Table 1")
    with pytest.raises(IgoasError, match="unknown table"):
        table_rows("table9")


def test_occluded_duke_run_is_compared_epoch_by_epoch(tmp_path):
    records = [{"epoch": e, "iteration": e * 244, "query": {"R1": r1 + 0.5, "mAP": m - 2.0}}
               for e, (r1, m) in sorted(OCCLUDED_DUKE_TRAJECTORY.items()) if e <= 60]
    records.insert(1, {"epoch": 6, "iteration": 1464, "query": {"R1": 30.0, "mAP": 20.0}})  # not in the log
    comparison = compare_run(_write_run(tmp_path, records), table_rows("table1")[0])
    assert comparison.last == {"epoch": 60.0, "R1": 60.6, "mAP": 47.4}
    assert comparison.best["epoch"] == 56.0  # the authors' mAP peak, shifted by the same 2 points
    assert [p["epoch"] for p in comparison.per_epoch] == [4, 8, 10, 12, 16, 20, 24, 28, 30, 32, 36, 40, 44, 48, 50,
                                                          52, 56, 60]
    assert all(p["dR1"] == pytest.approx(0.5) and p["dmAP"] == pytest.approx(-2.0) for p in comparison.per_epoch)
    text = "\n".join(comparison.lines())
    assert "18 more than 1 point off" in text and "vs published: R1 +0.5  mAP -2.0" in text


def test_multi_target_runs_are_read_per_dataset(tmp_path):
    records = [{"epoch": 4, "iteration": 1, "occluded_reid/query": {"R1": 70.0, "mAP": 60.0},
                "partial_reid/query": {"R1": 65.0, "mAP": 55.0}}]
    rows = {row.dataset: row for row in table_rows("table2")}
    run = _write_run(tmp_path, records)
    assert compare_run(run, rows["partial_reid"]).last["R1"] == 65.0
    assert compare_run(run, rows["partial_ilids"]).last is None


def test_missing_metrics_file_is_a_clear_error(tmp_path):
    with pytest.raises(IgoasError, match="metrics.jsonl"):
        compare_run(tmp_path, table_rows("table3")[0])


def _trained_run(folder: Path, preset: str, *overrides: str, r1: float = 50.0) -> Path:
    """A run folder as training leaves it: the saved config (data root made absolute) and one evaluation."""
    config = load_config(preset, overrides)
    config.data.root = "/datasets/elsewhere"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(config))
    return _write_run(folder, [{"epoch": 1, "iteration": 1, "occluded_reid/query": {"R1": r1, "mAP": r1 - 10}}])


def test_check_matches_run_folders_to_presets_by_their_config_not_their_order(tmp_path, capsys):
    half = _trained_run(tmp_path / "a", "occluded_reid_half_igoas", r1=40.0)
    standard = _trained_run(tmp_path / "b", "occluded_reid_igoas", r1=70.0)
    assert main(["reproduce", "table2", "--check", str(half), str(standard), "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "table2_comparison.json").read_text())
    assert {entry["name"]: entry["last"]["R1"] for entry in report if entry["dataset"] == "occluded_reid"} == {
        "Occluded-ReID (standard: trained on Market-1501)": 70.0, "Occluded-ReID (authors' half split)": 40.0}


def test_check_refuses_folders_of_other_recipes_twice_the_same_preset_or_none(tmp_path):
    configs = {preset: load_config(preset) for preset in ("occluded_reid_igoas", "occluded_reid_half_igoas")}
    standard = _trained_run(tmp_path / "standard", "occluded_reid_igoas")
    half = _trained_run(tmp_path / "half", "occluded_reid_half_igoas")
    other = _trained_run(tmp_path / "other", "occluded_reid_igoas", "optim.lr=0.01")
    with pytest.raises(IgoasError, match="optim.lr: 0.01 -> 0.0003"):
        match_runs([half, other], configs)
    with pytest.raises(IgoasError, match="both runs of occluded_reid_igoas"):
        match_runs([standard, half, _trained_run(tmp_path / "again", "occluded_reid_igoas")], configs)
    with pytest.raises(IgoasError, match="no run folder of occluded_reid_half_igoas"):
        match_runs([standard], configs)
    with pytest.raises(IgoasError, match="config.yaml: not found"):
        match_runs([tmp_path], configs)
    # trained with the overrides given again, and with the datasets elsewhere: still its preset
    assert match_runs([other], {"occluded_reid_igoas": load_config("occluded_reid_igoas", ["optim.lr=0.01"])})
    with_root = load_config("occluded_reid_igoas")
    with_root.data.target_options["partial_reid"]["root"] = "/datasets/x"
    assert match_runs([standard], {"occluded_reid_igoas": with_root}) == {"occluded_reid_igoas": standard}


@pytest.fixture
def trained(monkeypatch):
    """The configs and options the stand-in trainer was called with."""
    calls = []

    def fake_train(config, **kwargs):
        calls.append((config, kwargs))
        Path(config.train.output_dir).mkdir(parents=True, exist_ok=True)
        _write_run(Path(config.train.output_dir), [])  # a run without evaluations

    monkeypatch.setattr(igoas.commands.reproduce, "train", fake_train)
    return calls


def test_training_paths_reach_the_runs_as_given(tmp_path, trained):
    out, root = tmp_path / "runs #1", "data #2: yes"  # YAML would cut these at " #"
    assert main(["reproduce", "table2", "--out", str(out), "--root", root]) == 0
    assert [config.train.output_dir for config, _ in trained] == [str(out / "occluded_reid_igoas"),
                                                                  str(out / "occluded_reid_half_igoas")]
    config = trained[0][0]
    assert config.data.root == root and {config.data.target_options[name]["root"] for name in config.data.targets} \
        == {root}
    assert all(options["overwrite"] and options["resume"] is None for _, options in trained)


def test_training_refuses_a_folder_holding_a_run_it_did_not_start(tmp_path, trained, capsys):
    best = tmp_path / "occluded_duke_igoas" / "checkpoints" / "best.pth"
    best.parent.mkdir(parents=True)
    best.write_bytes(b"weights")
    assert main(["reproduce", "table1", "--out", str(tmp_path)]) == 2
    assert "best.pth" in capsys.readouterr().err and best.read_bytes() == b"weights" and not trained
    best.unlink()
    (tmp_path / "occluded_duke_igoas" / "config.yaml").write_text(OmegaConf.to_yaml(load_config("market1501_igoas")))
    assert main(["reproduce", "table1", "--out", str(tmp_path)]) == 2
    assert "a run of another config (data.dataset: 'market1501' -> 'occluded_duke'" in capsys.readouterr().err
    # its own run, killed before the first checkpoint, starts again
    (tmp_path / "occluded_duke_igoas" / "config.yaml").write_text(OmegaConf.to_yaml(load_config("occluded_duke_igoas")))
    assert main(["reproduce", "table1", "--out", str(tmp_path)]) == 0
    assert trained[0][1]["overwrite"]


def test_check_compares_pretrained_weights_by_content_not_by_spelling(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    copy_a, copy_b, other = weights / "resnet50-local.pth", weights / "same-bytes.pth", weights / "other.pth"
    copy_a.write_bytes(b"the ImageNet weights")
    copy_b.write_bytes(b"the ImageNet weights")
    other.write_bytes(b"other weights")
    digest = hashlib.sha256(b"the ImageNet weights").hexdigest()
    monkeypatch.setattr(igoas.model.pretrained, "torchvision_hash_prefixes",
                        lambda backbone: {digest[:8]: "imagenet1k_v1"} if backbone == "resnet50" else {})
    preset = "occluded_reid_igoas"  # asks for imagenet1k_v1
    offline = _trained_run(tmp_path / "offline", preset, f"model.pretrained={copy_a}")
    assert match_runs([offline], {preset: load_config(preset)}) == {preset: offline}
    assert match_runs([offline], {preset: load_config(preset, [f"model.pretrained={copy_b}"])}) == {preset: offline}
    with pytest.raises(IgoasError, match="model.pretrained: 'imagenet1k_v1' -> 'sha256:"):
        match_runs([offline], {preset: load_config(preset, [f"model.pretrained={other}"])})
    v2 = _trained_run(tmp_path / "v2", preset, "model.pretrained=imagenet1k_v2")
    with pytest.raises(IgoasError, match="model.pretrained: 'imagenet1k_v2' -> 'imagenet1k_v1'"):
        match_runs([v2], {preset: load_config(preset)})


def test_torchvision_file_names_give_their_weight_sets():
    from igoas.model.pretrained import torchvision_hash_prefixes

    assert torchvision_hash_prefixes("resnet50") == {"0676ba61": "imagenet1k_v1", "11ad3fa6": "imagenet1k_v2"}
    assert torchvision_hash_prefixes("no such backbone") == {}
