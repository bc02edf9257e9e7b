"""The paper-table comparison: presets exist, runs are read and compared correctly."""
import json

import pytest

from igoas.config import load_config
from igoas.errors import IgoasError
from igoas.reproduce import OCCLUDED_DUKE_TRAJECTORY, TABLES, compare_run, table_rows


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
