"""benchmarks/formats.py: the `--smoke` run gives every format's row with its accuracy, speed and
verdicts (the numbers of a random tiny model mean nothing); the verdict rules on a made-up report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_benchmark_train_step import load_script


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):
    return load_script("formats", monkeypatch)


@pytest.mark.slow  # exports the tiny model four times (torch.export, int8 calibration): ~30 s
def test_smoke_run_gives_every_format_its_row(bench, monkeypatch: pytest.MonkeyPatch, synthetic_root: Path,
                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(bench, "cpu_has_native_bf16", lambda: False)  # the emulated-bf16 branch, on any CPU
    report = bench.main(["--smoke", "--data", str(synthetic_root), "--frames", "2", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert printed["rows"] == json.loads((tmp_path / "formats.json").read_text())["rows"] == report["rows"]
    assert set(printed) >= {"cpu_capability", "torch", "onnxruntime", "openvino", "threads", "native_bf16"}
    assert list(report["rows"]) == list(bench.FORMATS) and report["finished"]
    assert report["rows"]["openvino_bf16"]["status"].startswith("not native on this CPU")
    for name, row in report["rows"].items():
        if name == "openvino_bf16":
            continue
        assert row["status"] == "measured", (name, row)
        assert 0.9 < row["min_cosine"] <= row["mean_cosine"] <= 1.0 + 1e-6
        assert {"R1", "mAP", "dR1", "dmAP", "keeps_ranking", "ratio_at_32", "reaches_2x_at_32"} <= set(row)
        assert set(row["crops_per_s"]) == {"1", "8", "32"} and min(row["crops_per_s"].values()) > 0
        assert all(0 < row["latency"][n]["p50_ms"] <= row["latency"][n]["p99_ms"] for n in ("10", "30"))
    reference = report["rows"]["pytorch_fp32"]
    assert reference["min_cosine"] == pytest.approx(1.0) and reference["dmAP"] == 0 and reference["keeps_ranking"]
    assert report["rows"]["onnx_fp32"]["min_cosine"] > 0.9999 and report["rows"]["onnx_fp32"]["keeps_ranking"]
    assert "int8" in report["rows"]["onnx_int8"]["precision"]
    table = (tmp_path / "formats.md").read_text().splitlines()
    assert table[0].startswith("| format |") and len(table) == 2 + len(bench.FORMATS)
    assert "\n".join(table) in captured.err


def test_verdicts_follow_the_ranking_and_speed_rules(bench) -> None:
    def row(r1: float, mAP: float, speed: float) -> dict:
        return {"status": "measured", "R1": r1, "mAP": mAP, "crops_per_s": {"32": speed}}

    report = {"rows": {"pytorch_fp32": row(50.0, 40.0, 100.0), "close": row(50.1, 39.9, 199.0),
                       "moved": row(50.0, 39.8, 200.0), "failed": {"status": "failed: RuntimeError: x"}}}
    bench.verdicts(report)
    rows = report["rows"]
    assert rows["close"]["keeps_ranking"] and not rows["close"]["reaches_2x_at_32"]
    assert not rows["moved"]["keeps_ranking"] and rows["moved"]["reaches_2x_at_32"]
    assert rows["moved"]["dmAP"] == -0.2 and rows["moved"]["ratio_at_32"] == 2.0
    assert "keeps_ranking" not in rows["failed"]
    assert "| failed | failed: RuntimeError: x |" in bench.markdown(report)
