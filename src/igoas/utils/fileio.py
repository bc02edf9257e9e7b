"""Atomic file writes: every output igoas writes is either complete or absent.

A temporary file in the target's folder is written, flushed to disk and renamed over the
target, so an interrupted run never leaves a half-written checkpoint, index, figure or
metrics file that a later step could mistake for a finished one. The temporary file is
given the mode a plain `open()` would have created (0666 less the umask), not tempfile's
private 0600, so results stay readable to a group on a shared server when the umask says so.
"""
from __future__ import annotations

import errno
import glob
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Callable

from igoas.utils.errors import IgoasError, describe_os_error

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask: read from /proc/self/status (Linux 4.7+), which changes nothing;
    elsewhere by setting and restoring it, which another thread creating a file at that
    instant could observe, hence the lock (it orders only igoas's own readers)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_identity(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """(resolved absolute path, size, modification time in ns): what tells one file from
    another, or from its own earlier contents, without reading it (for cache keys)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return str(resolved), stat.st_size, stat.st_mtime_ns


def file_mode() -> int:
    """The mode `open(path, "w")` gives a new file."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode `os.mkdir` gives a new folder."""
    return 0o777 & ~current_umask()


def user_cache_dir(name: str) -> Path:
    """`$XDG_CACHE_HOME/igoas/<name>` (or `~/.cache/igoas/<name>`): caches that only save time."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "igoas" / name


def staging_place(parent: str | os.PathLike[str], prefix: str, suffix: str = "", folder: bool = False) -> Path:
    """A new empty file (or folder, with `mkdir`'s mode) in `parent` for staging a result
    that is then renamed into place. Its name is `prefix`, this process's id, a random part
    and `suffix`, so that the staging places a killed process left (SIGKILL, a power cut: no
    `finally` ran) are recognised: those with the same prefix and suffix whose process no
    longer runs on this machine are removed first."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(parent, prefix, suffix)
    named = f"{prefix}{os.getpid()}."
    if folder:
        place = Path(tempfile.mkdtemp(prefix=named, suffix=suffix, dir=parent))
        os.chmod(place, folder_mode())
        return place
    fd, name = tempfile.mkstemp(prefix=named, suffix=suffix, dir=parent)
    os.close(fd)
    return Path(name)


def _remove_abandoned_staging(parent: Path, prefix: str, suffix: str) -> None:
    for staged in parent.glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"):
        pid = staged.name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or _process_running(int(pid)):
            continue
        if staged.is_dir() and not staged.is_symlink():
            shutil.rmtree(staged, ignore_errors=True)
        else:
            staged.unlink(missing_ok=True)


def _process_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def check_output(path: str | os.PathLike[str], folder: bool = False) -> Path:
    """Refuse, before any work, an output that could not be written at the end: a folder
    where a file is wanted (or the reverse), a file standing where a parent folder must be,
    or a parent folder this user cannot write into."""

    path = Path(path)
    if path.is_dir() != folder and path.exists():
        wanted = "a folder" if folder else "a file"
        raise IgoasError(f"{path}: exists and is not {wanted}; choose another output path")
    existing = path if folder and path.is_dir() else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise IgoasError(f"{path}: {existing} is a file, so no folder can be made there; choose another output path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise IgoasError(f"{path}: {existing} is not writable by this user; choose another output path")
    return path


TEMPORARY_SUFFIX = ".tmp"


def temporary_name_prefix(path: Path) -> str:
    """How the temporary files of `atomic_write(path)` begin (they end in TEMPORARY_SUFFIX)."""
    return f".{path.name}."


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any], sync_folder: bool = True,
                 shown_as: str | os.PathLike[str] | None = None) -> Path:
    """Call `write(binary_file)` on a temporary file beside `path`, then rename it over `path`.

    On any failure `path` is left as it was; a full disk or a folder that cannot be written
    becomes one IgoasError line naming `path` (or `shown_as`: the file the user asked for,
    where `path` is a hidden staging file). `sync_folder=False` skips flushing the folder
    entry (a few ms a file) for caches of many small files that can be rebuilt.
    """

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=temporary_name_prefix(path), suffix=TEMPORARY_SUFFIX, dir=path.parent)
    except OSError as err:
        raise IgoasError(f"cannot write {path}: {describe_os_error(err)}") from None
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        if sync_folder:
            _sync_folder(path.parent)
    except BaseException as raised:
        Path(tmp_name).unlink(missing_ok=True)
        err = _root_cause(raised)
        path = Path(shown_as) if shown_as is not None else path
        if isinstance(err, KeyboardInterrupt):
            raise KeyboardInterrupt(f"interrupted while writing {path}; the previous {path.name} (if any) "
                                    "is kept") from None
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise IgoasError(f"disk full while writing {path}; the previous {path.name} (if any) is kept. "
                             "Free some space and run again.") from None
        if isinstance(err, OSError):
            err.filename = err.filename or str(path)
            raise IgoasError(f"cannot write {path}: {describe_os_error(err)}") from None
        if isinstance(err, RuntimeError) and "write" in str(err).lower():  # torch.save's stream writer
            raise IgoasError(f"writing {path} failed ({str(err).splitlines()[0]}); is the disk full? The previous "
                             f"{path.name} (if any) is kept.") from None
        raise
    return path


def _root_cause(err: BaseException) -> BaseException:
    """The exception a writer's failure started from. torch.save's C++ stream writer turns
    a KeyboardInterrupt or a full disk raised inside its Python file object into a bare
    `RuntimeError: ... unexpected pos`, keeping the original only as `__context__`."""
    while isinstance(err, RuntimeError) and isinstance(err.__context__, (KeyboardInterrupt, OSError)):
        err = err.__context__
    return err


def _sync_folder(folder: Path) -> None:
    """Flush the folder entry too, so that a power cut after the rename cannot bring back
    the old file (best effort: some systems and file systems cannot sync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike[str], document: Any, indent: int | None = 2) -> Path:
    """Write `document` as UTF-8 JSON, atomically. NaN and infinities are refused (IgoasError,
    nothing written): they are not JSON and strict readers reject the file; write None for a
    missing value."""

    try:
        text = json.dumps(document, indent=indent, allow_nan=False) + "\n"
    except ValueError as err:
        raise IgoasError(f"cannot write {path}: a value is NaN or infinite ({err}), which JSON cannot hold") from None
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every JSON object of a JSON-lines file; blank lines are skipped, a cut-off last line too.

    A run that is still writing (or was killed) can end in a partial line; everything
    before it is still valid, so only a malformed line that is not the last one is an error.
    """

    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise IgoasError(f"{path}, line {number}: not valid JSON ({err.msg}); fix or delete that line") from None
        if not isinstance(record, dict):
            raise IgoasError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def append_jsonl(path: str | os.PathLike[str], record: Any) -> None:
    """Append one JSON line and flush it to disk: a record of finished work survives a
    kill, and a line cut off by one is dropped by `read_jsonl`."""
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(record) + "\n")
        stream.flush()
        os.fsync(stream.fileno())
