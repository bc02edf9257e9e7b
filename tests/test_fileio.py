"""Atomic writes: the file and the folder entry that names it both reach the disk."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from igoas.fileio import atomic_write


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
