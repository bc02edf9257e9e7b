"""The ablation's statistics: per-query scores against the evaluator, the paired bootstrap,
the mask-activity summary and the criteria checks (fast, no training)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from igoas.studies.ablation.records import mask_activity
from igoas.studies.ablation.statistics import (MASK_ACTIVE_SHARE, check_criteria, paired_bootstrap, per_query_scores,
                                       plateau_gain, verdict)
from igoas.evaluation import evaluate_rank


def test_per_query_scores_average_to_the_evaluators_metrics() -> None:
    rng = np.random.default_rng(0)
    q_pids, g_pids = rng.integers(0, 8, 30), rng.integers(0, 8, 120)
    q_cams, g_cams = rng.integers(0, 3, 30), rng.integers(0, 3, 120)
    distances = rng.random((30, 120)).round(2)  # rounded: ties must be broken as the evaluator does
    scores = per_query_scores(distances, q_pids, g_pids, q_cams, g_cams)
    reference = evaluate_rank(distances, q_pids, g_pids, q_cams, g_cams)
    assert len(scores["ap"]) == reference.num_valid_queries
    assert np.mean(scores["ap"]) == pytest.approx(reference.mAP)
    assert np.mean(scores["r1"]) == pytest.approx(reference.rank(1))


def test_paired_bootstrap_interval_and_verdict() -> None:
    rng = np.random.default_rng(1)
    control = [{"ap": rng.random(200).tolist()} for _ in range(3)]
    same = paired_bootstrap(control, control, "ap", resamples=500)
    assert same["difference"] == same["low"] == same["high"] == 0.0 and verdict(same) == "no difference detected"
    better = [{"ap": (np.asarray(c["ap"]) + 0.05).tolist()} for c in control]
    shifted = paired_bootstrap(better, control, "ap", resamples=500)
    assert shifted["difference"] == pytest.approx(5.0) and shifted["low"] == pytest.approx(5.0)
    assert verdict(shifted) == "beats"
    noisy = [{"ap": (np.asarray(c["ap"]) + rng.normal(0.02, 0.3, 200)).tolist()} for c in control]
    interval = paired_bootstrap(noisy, control, "ap", resamples=2000, seed=3)
    assert interval["low"] < interval["difference"] < interval["high"]
    assert interval == paired_bootstrap(noisy, control, "ap", resamples=2000, seed=3)  # reproducible
    with pytest.raises(ValueError, match="same"):
        paired_bootstrap(noisy[:2], control, "ap")


def _write_log(run_dir: Path, records: list[dict]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_mask_activity_counts_steps_after_the_first_epoch(tmp_path: Path) -> None:
    records = [{"epoch": 1 + (i - 1) // 4, "iteration": i, "occluded_fraction": 0.1, "mask_hidden": 0.1,
                "mask_zeroed_cells": 0.0 if i in (1, 2, 6) else 0.2,
                "loss": {"id_global": 1.0, "mask_suppression": 0.01, "mask_global": 0.02}} for i in range(1, 13)]
    _write_log(tmp_path / "run", records)
    activity = mask_activity(tmp_path / "run")
    assert activity["logged_steps"] == 8 and activity["share_with_zeroed_cell"] == pytest.approx(7 / 8)
    assert activity["mask_suppression"] == pytest.approx(0.01) and len(activity["per_epoch"]) == 3
    _write_log(tmp_path / "plain", [{"epoch": 1, "iteration": 1, "loss": {"id_global": 1.0}}])
    assert mask_activity(tmp_path / "plain") is None
    _write_log(tmp_path / "one_epoch", records[:4])
    assert mask_activity(tmp_path / "one_epoch")["share_with_zeroed_cell"] is None  # nothing after epoch 1


def _run(arm: str, seed: int, share: float, holistic: tuple[float, float], trunk: str = "abc") -> dict:
    curve = [{"epoch": epoch, "holistic": {"mAP": value}} for epoch, value in zip((14, 20), holistic)]
    activity = None if arm == "baseline" else {"share_with_zeroed_cell": share, "mean_zeroed_cells": 0.2,
                                               "mask_suppression": 0.01, "mask_global": 0.02}
    return {"arm": arm, "seed": seed, "curve": curve, "mask_activity": activity, "pretrained": {"sha256": trunk},
            "config": {"train": {"fixbase_epochs": 1}}}


SHARES = {"train": {"occluded_share": 0.09}, "query": {"occluded_share": 1.0}, "gallery": {"occluded_share": 0.104}}


def test_criteria_pass_and_fail() -> None:
    runs = [_run("baseline", s, 0, (60.0, 60.5)) for s in (1, 2, 3)] + [_run("igoas", s, 0.95, (50, 55))
                                                                          for s in (1, 2, 3)]
    passed = check_criteria(runs, ["baseline", "igoas"], [1, 2, 3], epochs=20, masked_arms=["igoas"],
                            occluded_shares=SHARES)
    assert all(entry["passed"] for entry in passed.values())
    assert passed["C3_plateau"]["gain_last_quarter"]["igoas"]["mean"] == 5.0  # reported, not decided on
    runs[3] = _run("igoas", 1, MASK_ACTIVE_SHARE - 0.05, (50, 55))
    runs[0] = _run("baseline", 1, 0, (55.0, 60.0), trunk="other")
    failed = check_criteria(runs, ["baseline", "igoas"], [1, 2], epochs=20, masked_arms=["igoas"],
                            occluded_shares={**SHARES, "gallery": {"occluded_share": 0.13}})
    assert not any(entry["passed"] for entry in failed.values())
    assert plateau_gain([{"epoch": 20, "holistic": {"mAP": 1.0}}], 20) is None  # no early point


def test_criteria_fail_on_missing_evidence() -> None:
    """A masked arm without logged activity, a run without a trunk hash, the wrong fixbase or
    unknown benchmark shares fail their criterion instead of dropping out of it."""
    runs = [_run("baseline", 1, 0, (60.0, 60.5)), _run("igoas", 1, 0.95, (50, 55))]
    runs[1]["mask_activity"] = None
    criteria = check_criteria(runs, ["baseline", "igoas"], [1], epochs=20, masked_arms=["igoas"])
    assert not criteria["C1_mechanism_active"]["passed"]
    assert "problem" in criteria["C1_mechanism_active"]["arms"]["igoas"]
    assert not criteria["C5_benchmark"]["passed"]
    unhashed = [_run("baseline", s, 0, (60.0, 60.5), trunk="") for s in (1, 2)]
    assert not check_criteria(unhashed, ["baseline"], [1, 2], epochs=20)["C2_pretrained_start"]["passed"]
    late = [_run("baseline", 1, 0, (60.0, 60.5))]
    late[0]["config"]["train"]["fixbase_epochs"] = 3  # the recipe's rule gives 1 for 20 epochs
    assert not check_criteria(late, ["baseline"], [1], epochs=20)["C2_pretrained_start"]["passed"]


def test_records_stay_valid_when_options_are_added_not_when_values_change() -> None:
    from igoas.studies.ablation.records import matches

    saved = {"config": {"optim": {"lr": 0.1}, "eval": {"every": 2}}, "stress_settings": {"areas": [0, 30]}}
    grown = {"optim": {"lr": 0.1}, "eval": {"every": 2, "also_every": 0}}  # an option added since
    assert matches(saved, grown, {"areas": [0, 30]}, None)
    assert not matches(saved, {"optim": {"lr": 0.2}, "eval": {"every": 2}}, {"areas": [0, 30]}, None)
    assert not matches(saved, {"optim": {"lr": 0.1}}, {"areas": [0, 30]}, None)  # a setting gone is a change
    assert not matches(saved, grown, {"areas": [0, 45]}, None)
    assert not matches({**saved, "config": {}}, grown, {"areas": [0, 30]}, None)


def test_records_match_the_trunk_by_content_not_by_path() -> None:
    from igoas.studies.ablation.records import matches

    saved = {"config": {"model": {"pretrained": "/a/trunk.pth"}, "optim": {"lr": 0.1}},
             "stress_settings": {}, "pretrained": {"path": "/a/trunk.pth", "sha256": "aaa"}}
    moved = {"model": {"pretrained": "/elsewhere/trunk.pth"}, "optim": {"lr": 0.1}}
    assert matches(saved, moved, {}, "aaa")  # the same trunk in another folder
    assert not matches(saved, saved["config"], {}, "bbb")  # a rebuilt trunk at the same path
    assert not matches(saved, saved["config"], {}, None)  # the file is gone
