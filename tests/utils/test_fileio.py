"""Atomic writes: the file and the folder entry that names it both reach the disk."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from igoas.utils.errors import IgoasError
from igoas.utils.fileio import atomic_write


def test_atomic_write_syncs_the_file_then_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write(tmp_path / "out.json", lambda handle: handle.write(b"{}"))
    assert (tmp_path / "out.json").read_bytes() == b"{}"
    assert synced == ["file", "folder"]


def test_a_folder_that_cannot_be_synced_does_not_fail_the_write(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def refuse_folders(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", refuse_folders)
    atomic_write(tmp_path / "out.bin", lambda handle: handle.write(b"x"))
    assert (tmp_path / "out.bin").read_bytes() == b"x"


def test_a_cache_write_can_skip_the_folder_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[bool] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write(tmp_path / "cached.png", lambda handle: handle.write(b"png"), sync_folder=False)
    assert synced == [False]


class _FailsOnThirdWrite:
    """A file object that raises `error` part-way through torch.save, as Ctrl-C or a full disk does."""

    def __init__(self, handle, error: BaseException) -> None:
        self.handle, self.error, self.writes = handle, error, 0

    def write(self, data: bytes) -> int:
        self.writes += 1
        if self.writes == 3:
            raise self.error
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


@pytest.mark.parametrize("error, expected", [
    (KeyboardInterrupt(), KeyboardInterrupt),
    (OSError(28, "No space left on device"), IgoasError),
])
def test_an_interrupted_or_full_torch_save_is_one_line_and_keeps_the_old_file(
        tmp_path: Path, error: BaseException, expected: type) -> None:
    """torch.save reports both as `RuntimeError: unexpected pos`; the message must name the real cause."""
    target = tmp_path / "last.pth"
    target.write_bytes(b"previous")
    payload = {"a": torch.zeros(100_000), "b": torch.ones(10)}
    with pytest.raises(expected) as raised:
        atomic_write(target, lambda handle: torch.save(payload, _FailsOnThirdWrite(handle, error)))
    message = str(raised.value)
    assert ("interrupted" if expected is KeyboardInterrupt else "disk full") in message
    assert "unexpected pos" not in message and str(target) in message
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no staging file left


def test_the_cli_names_the_file_an_interrupt_kept(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from igoas import cli
    from igoas.commands import data as data_command

    def interrupted(args) -> int:
        raise KeyboardInterrupt("interrupted while writing runs/x/last.pth; the previous last.pth (if any) is kept")

    monkeypatch.setattr(data_command, "run", interrupted)
    assert cli.main(["data", "check", "nowhere", "--dataset", "custom"]) == 130
    assert capsys.readouterr().err.strip() == (
        "igoas data: interrupted: interrupted while writing runs/x/last.pth; the previous last.pth (if any) is kept")
