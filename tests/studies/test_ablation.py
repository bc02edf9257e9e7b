"""The ablation study: arm configs, aggregation over seeds, and the reduced study end to end
(a test of the pipeline, not of the numbers)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from igoas.studies.ablation import (ARMS, DEFAULT_RECIPE, EVALUATIONS, REDUCED_STRESS, arm_config, format_table,
                            run_ablation)
from igoas.studies.ablation.statistics import mean_stress as _mean_stress, summarize as _summarize
from igoas.config import load_config, to_dict
from igoas.utils.errors import ConfigError
from igoas.model.occlusion import build_occlusion


# ----------------------------------------------------------------------------- configs
def test_arms_differ_only_in_model_and_occlusion() -> None:
    configs = {arm: to_dict(arm_config(arm, seed=1)) for arm in ARMS}
    shared = {section: values for section, values in configs["igoas"].items() if section != "model"}
    for arm, cfg in configs.items():
        assert {section: values for section, values in cfg.items() if section != "model"} == shared, arm
        assert cfg["model"]["backbone"] == configs["igoas"]["model"]["backbone"]
        assert (cfg["model"]["name"], cfg["model"]["occlusion"]) == (ARMS[arm].model, ARMS[arm].occlusion)
    assert configs["baseline"]["model"]["occlusion_options"] == {}
    # single-image random erasing as Zhong et al.: half of the images, so clean ones are seen too
    assert configs["random_erasing"]["model"]["occlusion_options"] == {"probability": 0.5}
    schedule = configs["igoas"]["model"]["occlusion_options"]
    assert configs["igoas_no_osm"]["model"]["occlusion_options"] == schedule
    fixed = build_occlusion("igo_fixed", **configs["igo_fixed"]["model"]["occlusion_options"])
    assert fixed.area_ratio(0.0) == fixed.area_ratio(15.5) == pytest.approx(schedule["final"])


def test_seed_and_overrides_reach_every_arm() -> None:
    cfg = arm_config("baseline", seed=7, overrides=["optim.lr=0.01", "model.occlusion_options.start=0.2"])
    assert cfg.train.seed == 7 and cfg.optim.lr == 0.01
    # recipe overrides of the IGO schedule reach the IGO arms only
    assert to_dict(cfg.model.occlusion_options) == {}
    assert arm_config("igoas", 7, overrides=["model.occlusion_options.start=0.2"]).model.occlusion_options.start == 0.2
    with pytest.raises(ConfigError, match="unknown ablation arm"):
        arm_config("dropout", seed=1)


STUDY_RECORDS = Path(__file__).resolve().parents[2] / "docs" / "ablation" / "study"


@pytest.mark.parametrize("record_file", sorted(STUDY_RECORDS.glob("*/seed*.json")),
                         ids=lambda path: f"{path.parent.name}-{path.stem}")
def test_committed_study_records_still_match_their_arms(record_file: Path) -> None:
    """A change to the recipe, the arms or the fingerprint rules must not silently orphan
    the committed study runs (hours of CPU each): every record still matches its arm."""
    from dataclasses import asdict

    from igoas.studies.ablation import STRESS
    from igoas.studies.ablation.records import matches, started_from
    from igoas.studies.fingerprint import as_json, fingerprint

    record = json.loads(record_file.read_text())
    cfg = arm_config(record_file.parent.name, int(record_file.stem.removeprefix("seed")))
    assert matches(record, fingerprint(cfg), as_json(asdict(STRESS)), started_from(record))


def test_study_paths_are_set_on_the_config_not_parsed(tmp_path: Path) -> None:
    from igoas.studies.ablation.study import _recipe_config

    out = tmp_path / "study #1: yes"  # YAML would cut a comment, read a mapping or a boolean
    assert _recipe_config(DEFAULT_RECIPE, out, False, []).data.root == str(out / "data")
    reduced = _recipe_config(DEFAULT_RECIPE, out, True, ["optim.lr=0.01"])
    assert reduced.model.pretrained == str(out / "pretrain" / "trunk.pth") and reduced.optim.lr == 0.01
    assert _recipe_config(DEFAULT_RECIPE, out, False, ["data.root=/elsewhere"]).data.root == "/elsewhere"


@pytest.mark.parametrize("recipe", [DEFAULT_RECIPE, "synthetic_demo", "synthetic_demo_quick", "synthetic_ablation"])
def test_recipe_igo_schedule_keeps_the_published_shape(recipe: str) -> None:
    """The published schedule ramps 0.1 + 0.4 e / 90 during epochs 0-55 of 90; the short
    recipes must scale slope and ramp length with their own epoch count (change both with
    train.epochs)."""
    cfg = load_config(recipe)
    epochs, schedule = cfg.train.epochs, cfg.model.occlusion_options
    assert schedule.slope == pytest.approx(0.4 / epochs)
    assert schedule.ramp_epochs + 1 == round(56 * epochs / 90)
    igo = build_occlusion("igo", **to_dict(schedule))
    assert igo.area_ratio(0.0) == pytest.approx(0.1)
    assert igo.area_ratio(epochs - 0.01) == pytest.approx(1 / 3)
    ratios = [igo.area_ratio(step / 10) for step in range(10 * (schedule.ramp_epochs + 1))]
    assert ratios == sorted(ratios)  # easy to hard
    for step in range(10 * epochs):  # the rectangle always fits the recipe's input
        igo.rectangle(cfg.data.height, cfg.data.width, step / 10)
    if cfg.model.pretrained:  # fixbase protects pretrained layers: the published 5 of 90 epochs, scaled
        assert cfg.train.fixbase_epochs == max(1, round(5 * epochs / 90))


@pytest.mark.parametrize("recipe", [DEFAULT_RECIPE, "synthetic_demo"])
def test_recipe_geometry_keeps_the_mechanism_active(recipe: str) -> None:
    """Criterion C1 on the recipe itself (and the demo): after the first epoch, the IGO
    rectangle zeroes at least one whole cell of the stage-4 map in at least 90 % of the steps."""
    import torch

    from igoas.studies.ablation.statistics import MASK_ACTIVE_SHARE
    from igoas.model.osm import mask_activity, resize_mask

    cfg = load_config(recipe)
    height, width = cfg.data.height // 16, cfg.data.width // 16  # stride-1 stage 4
    igo = build_occlusion("igo", **to_dict(cfg.model.occlusion_options))
    generator, images = torch.Generator().manual_seed(0), torch.zeros(1, 3, cfg.data.height, cfg.data.width)
    steps = [step / 4 for step in range(4, 4 * cfg.train.epochs)]
    active = [mask_activity(resize_mask(igo(images, progress, generator)[1], torch.zeros(1, 1, height, width)))
              ["mask_zeroed_cells"] > 0 for progress in steps]
    assert sum(active) / len(active) >= MASK_ACTIVE_SHARE


def test_all_arms_build_at_the_recipe_size() -> None:
    import torch

    from igoas.model import build_model

    for arm in ARMS:
        cfg = arm_config(arm, seed=1, overrides=["model.backbone=resnet18"])
        model = build_model(cfg.model.name, num_classes=5, backbone=cfg.model.backbone,
                            occlusion=cfg.model.occlusion, occlusion_options=to_dict(cfg.model.occlusion_options))
        assert model.occlusion.__class__.__name__  # built without option errors
        if arm == "baseline":
            images = torch.randn(2, 3, cfg.data.height, cfg.data.width)
            assert model.eval()(images).shape == (2, 512)


# ----------------------------------------------------------------------------- aggregation
def _fake_run(arm: str, seed: int, r1: float, stress_map: tuple[float, float]) -> dict:
    metrics = {name: {"R1": r1, "R5": r1, "R10": r1, "mAP": r1 / 2, "mINP": r1 / 4} for name in ("query", "holistic")}
    stress = [{"checkpoint": arm, "position": "top", "area": area, "occluded_percent": area, "R1": value,
               "R5": value, "R10": value, "mAP": value, "mINP": value, "num_queries": 3}
              for area, value in zip((0.0, 30.0), stress_map)]
    return {"arm": arm, "seed": seed, "metrics": metrics, "stress": stress}


def test_summary_statistics_over_seeds_and_table() -> None:
    runs = [_fake_run("baseline", 1, 40.0, (50.0, 10.0)), _fake_run("baseline", 2, 50.0, (60.0, 30.0)),
            _fake_run("igoas", 1, 70.0, (80.0, 70.0)), _fake_run("igoas", 2, 70.0, (80.0, 50.0))]
    summary = _summarize(runs, ["baseline", "igoas"])
    r1 = summary["baseline"]["query"]["R1"]
    assert r1["mean"] == 45.0 and r1["std"] == pytest.approx(math.sqrt(50.0)) and r1["values"] == [40.0, 50.0]
    assert summary["igoas"]["query"]["R1"]["std"] == 0.0
    # the stress column averages occluded settings only (area 0 is the clean score)
    assert summary["baseline"]["stress"]["mAP"]["values"] == [10.0, 30.0]
    mean_stress = _mean_stress(runs, ["baseline", "igoas"])
    top30 = [r for r in mean_stress["igoas"] if r["area"] == 30.0][0]
    assert top30["mAP"] == 60.0 and top30["seeds"] == 2
    table = format_table(summary, ["baseline", "igoas"], [1, 2]).splitlines()
    assert len(table) == 4 and table[2].startswith("| baseline | 45.0 ± 7.1 |")
    assert table[0].endswith("| corrupted mAP |") and table[2].endswith("| n/a |")  # not evaluated yet
    corrupted = [{**run, "evaluations": {"corrupted": {"mAP": 12.0 + i}}} for i, run in enumerate(runs)]
    filled = format_table(_summarize(corrupted, ["baseline", "igoas"]), ["baseline", "igoas"], [1, 2])
    assert filled.splitlines()[2].endswith("| 12.5 ± 0.7 |")


# ----------------------------------------------------------------------------- the reduced study
@pytest.fixture(scope="module")
def reduced_study(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ablation")
    messages: list[str] = []
    result = run_ablation(out, seeds=1, reduced=True, overrides=[f"data.root={synthetic_root}"],
                          log=messages.append)
    return result, messages


@pytest.mark.slow
def test_reduced_study_scores_every_arm_and_writes_outputs(reduced_study) -> None:
    from PIL import Image

    result, _ = reduced_study
    assert result.arms == list(ARMS) and result.seeds == [1]
    for arm in ARMS:
        for query_set in ("query", "holistic", "stress"):
            for metric in ("R1", "mAP", "mINP"):
                value = result.summary[arm][query_set][metric]["mean"]
                assert 0.0 <= value <= 100.0, (arm, query_set, metric)
        corrupted = result.summary[arm]["corrupted"]  # the corruption benchmark's column
        assert 0.0 <= corrupted["mAP"]["mean"] <= 100.0 and set(corrupted) == {"R1", "mAP", "mINP"}
        stress = result.stress[arm]
        assert {(r["position"], r["area"]) for r in stress} == {
            (p, a) for p in REDUCED_STRESS.positions for a in REDUCED_STRESS.areas}
    saved = json.loads(result.files["results"].read_text())
    assert set(saved["arms"]) == set(ARMS) and saved["machine"]["cpu_capability"]
    assert saved["arms"]["igo_fixed"]["occlusion"] == "igo_fixed"
    table = result.files["table"].read_text()
    assert all(f"| {arm} |" in table for arm in ARMS)
    for name in ("stress", "activations", "curves"):
        with Image.open(result.files[name]) as image:
            assert image.format == "PNG" and image.size[0] > 100
    # one trained run per arm, each with the arm's network, from the same pretrained trunk
    for arm in ARMS:
        record = json.loads((result.out_dir / "records" / arm / "seed1.json").read_text())
        assert record["config"]["model"]["name"] == ARMS[arm].model
        assert record["pretrained"]["sha256"] and record["config"]["train"]["fixbase_epochs"] == 1
        assert [point["epoch"] for point in record["curve"]] == [1, 2]
        assert len(record["per_query"]["query"]["ap"]) == saved["dataset"]["queries"]
        assert "checkpoints" not in json.dumps(record)  # small: no checkpoint in a record
    # the mask activity is logged for every occluding arm, the mask-loss terms for the OSM arms
    activity = {arm: json.loads((result.out_dir / "records" / arm / "seed1.json").read_text())["mask_activity"]
                for arm in ARMS}
    assert activity["baseline"] is None
    assert all(activity[arm]["logged_steps"] > 0 for arm in ARMS if arm != "baseline")
    assert activity["igoas"]["mask_suppression"] is not None and activity["igoas_no_osm"]["mask_suppression"] is None
    assert activity["batch_dropblock"]["share_with_zeroed_cell"] == 1.0
    criteria = result.criteria
    assert set(criteria) == {"C1_mechanism_active", "C2_pretrained_start", "C3_plateau", "C4_seeds", "C5_benchmark"}
    assert criteria["C2_pretrained_start"]["passed"] and not criteria["C4_seeds"]["passed"]  # one seed only
    assert "baseline" in criteria["C3_plateau"]["gain_last_quarter"]
    for query_set in ("query", "holistic"):
        for score in ("r1", "ap"):
            interval = result.bootstrap[query_set][score]
            assert interval["low"] <= interval["difference"] <= interval["high"]
    assert "## Criteria" in table and "paired bootstrap" in table


@pytest.mark.slow
def test_rerun_reuses_finished_runs(reduced_study, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import igoas.training.trainer as trainer
    import igoas.robustness.occlusion_stress as robustness

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained or stress-tested again")

    monkeypatch.setattr(trainer, "train", refuse)
    monkeypatch.setattr(robustness, "occlusion_stress_test", refuse)
    result, _ = reduced_study
    messages: list[str] = []
    again = run_ablation(result.out_dir, seeds=1, reduced=True, methods=["baseline", "igoas"],
                         overrides=[f"data.root={synthetic_root}"], log=messages.append)
    assert again.summary["igoas"]["query"] == result.summary["igoas"]["query"]
    assert sum("reusing" in message for message in messages) == 2
    # a later session holds only the committed records, no run folders: nothing is retrained
    records = result.out_dir / "records"
    elsewhere = result.out_dir.parent / (result.out_dir.name + "_elsewhere")
    messages.clear()
    moved = run_ablation(elsewhere, seeds=1, reduced=True, methods=["baseline", "igoas"], records_dir=records,
                         overrides=[f"data.root={synthetic_root}", f"model.pretrained={result.out_dir}/pretrain/trunk.pth"],
                         log=messages.append)
    assert moved.summary["baseline"]["holistic"] == result.summary["baseline"]["holistic"]
    assert any("activations.png not drawn" in message for message in messages)


@pytest.mark.slow
def test_registered_evaluation_completes_old_records(reduced_study, synthetic_root: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    result, _ = reduced_study
    seen: list[Path] = []

    def later(checkpoint: Path, dataset, cfg, reduced: bool) -> dict:
        assert reduced
        seen.append(checkpoint)
        return {"mAP": 7.5}

    monkeypatch.setitem(EVALUATIONS, "later", later)
    final_metrics = result.out_dir / "runs" / "baseline" / "seed1" / "metrics.json"
    hidden = final_metrics.rename(final_metrics.with_suffix(".hidden"))
    try:  # a run folder whose training did not finish is never scored
        unfinished = run_ablation(result.out_dir, seeds=1, reduced=True, methods=["baseline"],
                                  overrides=[f"data.root={synthetic_root}"], log=None)
    finally:
        hidden.rename(final_metrics)
    assert not seen and "later" not in unfinished.summary["baseline"]
    again = run_ablation(result.out_dir, seeds=1, reduced=True, methods=["baseline"],
                         overrides=[f"data.root={synthetic_root}"], log=None)
    assert len(seen) == 1 and again.summary["baseline"]["later"]["mAP"]["mean"] == 7.5


@pytest.mark.slow
def test_changed_recipe_is_refused_not_mixed(reduced_study, synthetic_root: Path) -> None:
    result, _ = reduced_study
    with pytest.raises(ConfigError, match="different recipe.*optim.lr"):
        run_ablation(result.out_dir, seeds=1, reduced=True, methods=["baseline"],
                     overrides=[f"data.root={synthetic_root}", "optim.lr=0.123"], log=None)


@pytest.mark.slow
def test_another_trunk_is_refused_not_mixed(reduced_study, synthetic_root: Path, tmp_path: Path) -> None:
    """A trunk with other content (a rebuilt one) neither reuses the records nor continues the runs."""
    import torch

    result, _ = reduced_study
    state = torch.load(result.out_dir / "pretrain" / "trunk.pth", weights_only=True)
    first = next(key for key, value in state.items() if value.is_floating_point())
    state[first] = state[first] + 0.01
    torch.save(state, tmp_path / "trunk.pth")
    with pytest.raises(ConfigError, match="different recipe.*pretrained trunk SHA-256"):
        run_ablation(result.out_dir, seeds=1, reduced=True, methods=["baseline"],
                     overrides=[f"data.root={synthetic_root}", f"model.pretrained={tmp_path / 'trunk.pth'}"], log=None)


@pytest.mark.slow
def test_command_line_prints_the_table(reduced_study, synthetic_root: Path, capsys: pytest.CaptureFixture) -> None:
    from igoas.cli import main

    result, _ = reduced_study
    code = main(["ablation", f"data.root={synthetic_root}", "--reduced", "--seeds", "1", "--methods", "baseline",
                 "--out", str(result.out_dir)])
    assert code == 0
    assert "| baseline |" in capsys.readouterr().out


def test_command_line_reports_bad_seeds(capsys: pytest.CaptureFixture) -> None:
    from igoas.cli import main

    assert main(["ablation", "--seeds", "two"]) == 2
    assert "--seeds" in capsys.readouterr().err
