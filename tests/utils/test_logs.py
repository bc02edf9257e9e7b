"""Logs read well when not on a terminal: no carriage-return frames, and timestamped
torchreid-style progress lines (`epoch [1/60][10/200] ... eta H:MM:SS`)."""
from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest
import torch

from igoas.cli import main
from igoas.utils.progress import track

STAMP = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] "


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_track_draws_a_bar_on_a_terminal_and_lines_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert list(track(range(30), 30, "embedding batches")) == list(range(30))
    assert "\r" in terminal.getvalue()

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    assert list(track(range(30), 30, "embedding batches", lines=3)) == list(range(30))
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 3
    assert re.fullmatch(STAMP + r"embedding batches \[30/30\] eta 0:00:00", lines[-1])


@pytest.mark.slow
def test_training_off_a_terminal_prints_timestamped_epoch_lines(synthetic_root: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # train.progress_bar is left at its default (true): the bar must switch itself off here
    assert main(["train", "synthetic_demo_quick", f"data.root={synthetic_root}", "data.height=32", "data.width=16",
                 "data.batch_size=8", "train.epochs=1", "train.device=cpu", "train.precision=fp32",
                 "train.tensorboard=false", "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.out + captured.err
    progress = [line for line in captured.out.splitlines() if "eta" in line]
    assert progress, captured.out
    for line in progress:
        assert re.fullmatch(STAMP + r"epoch \[1/1\]\[\d+/4\] iteration \d+/4 .* lr \S+ .* img/s eta \d+:\d\d:\d\d",
                            line), line
    assert (tmp_path / "run" / "train.log").read_text().count(" eta ") == len(progress)


def test_extraction_off_a_terminal_has_no_carriage_returns(tiny_checkpoint: Path, synthetic_root: Path,
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", str(tiny_checkpoint), str(synthetic_root), "--dataset", "synthetic", "--workers", "0",
                 "--batch-size", "4", "--out", str(tmp_path / "f.npz")]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.out + captured.err
    assert re.search(STAMP + r"embedding batches \[\d+/\d+\] eta", captured.err)


def test_track_counts_weighted_items(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    batches = [[0] * 16, [0] * 16, [0] * 8]
    assert list(track(batches, 40, "corruptions model images", lines=2, size=len)) == batches
    lines = log.getvalue().splitlines()
    assert [line.split("] ", 1)[1].split(" eta")[0] for line in lines] == [
        "corruptions model images [32/40]", "corruptions model images [40/40]"]


def test_track_without_a_known_total(monkeypatch: pytest.MonkeyPatch) -> None:
    from igoas.utils.progress import UNKNOWN_TOTAL_STEP

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    assert sum(track(iter(range(2 * UNKNOWN_TOTAL_STEP + 1)), None, "embedding batches")) > 0
    lines = log.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        f"embedding batches [{UNKNOWN_TOTAL_STEP}]", f"embedding batches [{2 * UNKNOWN_TOTAL_STEP}]"]


def test_ranking_progress_counts_queries_and_announces_re_ranking(monkeypatch: pytest.MonkeyPatch) -> None:
    from igoas.evaluation import evaluate_features

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    generator = torch.Generator().manual_seed(0)
    queries, gallery = torch.randn(10, 8, generator=generator), torch.randn(30, 8, generator=generator)
    pids = torch.arange(30) % 5
    arguments = (queries, gallery, pids[:10], pids, torch.zeros(10, dtype=torch.long), torch.ones(30, dtype=torch.long))
    evaluate_features(*arguments, max_rank=5, chunk_size=4, progress=True, progress_label="ranking q")
    evaluate_features(*arguments, max_rank=5, rerank=True, rerank_params=(4, 2, 0.3), progress=True,
                      progress_label="ranking q")
    lines = [line.split("] ", 1)[1] for line in log.getvalue().splitlines()]
    assert [line.split(" eta")[0] for line in lines[:-1]] == ["ranking q [4/10]", "ranking q [8/10]", "ranking q [10/10]"]
    assert lines[-1] == "ranking q: k-reciprocal re-ranking of 10 x 30"
