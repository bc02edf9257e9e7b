"""Progress that reads well on a terminal and in a log file.

On a terminal a tqdm bar redraws itself in place. Under Slurm, nohup, CI or `> log` the
same redraws become carriage-return frames that bloat the file and read as noise, so there
the bar switches off by itself and a few timestamped lines with an ETA are printed instead,
as torchreid and detectron2 do.
"""
from __future__ import annotations

import sys
import time
from typing import IO, Iterable, Iterator, TypeVar

T = TypeVar("T")


def interactive(stream: IO[str] | None = None) -> bool:
    """Whether `stream` (default stderr, where bars are drawn) is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def stamped(message: str) -> str:
    """`message` behind a local-time stamp, the form every igoas log line takes."""
    return f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}"


def format_duration(seconds: float) -> str:
    """H:MM:SS, as torchreid prints its ETA."""
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def track(items: Iterable[T], total: int, description: str, enabled: bool = True, lines: int = 10) -> Iterator[T]:
    """Yield `items`, showing progress: a bar on a terminal, else about `lines` timestamped lines."""
    if not enabled:
        yield from items
        return
    if interactive():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=description, leave=False, file=sys.stderr)
        return
    every = max(1, -(-total // max(lines, 1)))
    start = time.perf_counter()
    done = 0
    for done, item in enumerate(items, start=1):
        yield item
        if done % every == 0 or done == total:
            eta = (time.perf_counter() - start) / done * max(total - done, 0)
            print(stamped(f"{description} [{done}/{total}] eta {format_duration(eta)}"), file=sys.stderr, flush=True)
