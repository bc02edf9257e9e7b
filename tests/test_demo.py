"""`igoas demo --quick`: the README's main command end to end on the tiny synthetic set."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from igoas.cli import main

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_quick_demo_writes_the_report_folder(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    monkeypatch.chdir(tmp_path)  # --data relative to the working folder, as `igoas demo` passes data/synthetic
    # the session's tiny set has the quick preset's parameters, so it is reused, not re-rendered
    assert main(["demo", "--quick", "--out", str(out), "--data", os.path.relpath(synthetic_root)]) == 0
    printed = capsys.readouterr().out
    assert "untrained" in printed and "holistic" in printed and "mAP" in printed

    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["mAP"] <= 100.0 and 0.0 <= metrics["untrained"]["mAP"] <= 100.0
    assert set(metrics["query_sets"]) == {"query", "holistic"}
    for figure in ("figures/cmc.png", "figures/ranked_lists.png"):
        assert (out / figure).read_bytes()[:8] == PNG_MAGIC
    assert "<table" in (out / "report.html").read_text()
    assert any(path.name.startswith("events.out.tfevents") for path in (out / "tensorboard").iterdir())
    assert (out / "checkpoints" / "last.pth").is_file() and (out / "config.yaml").is_file()
    # the run records the data folder absolute: evaluating its checkpoint elsewhere reads the same images
    assert OmegaConf.load(out / "config.yaml").data.root == str(synthetic_root.resolve())
