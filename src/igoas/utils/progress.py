"""Progress that reads well on a terminal and in a log file.

On a terminal a tqdm bar redraws itself in place. Under Slurm, nohup, CI or `> log` the
same redraws become carriage-return frames that bloat the file and read as noise, so there
the bar switches off by itself and a few timestamped lines with an ETA are printed instead,
as torchreid and detectron2 do.
"""
from __future__ import annotations

import sys
import time
from typing import IO, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
UNKNOWN_TOTAL_STEP = 50  # counts between log lines when the total is not known


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


def announce(message: str, enabled: bool = True) -> None:
    """One timestamped line on stderr, for a step too coarse for a bar (a dense re-ranking)."""
    if enabled:
        print(stamped(message), file=sys.stderr, flush=True)


def say(message: str) -> None:
    """One result line on stdout that a progress bar on the terminal does not break up
    (tqdm writes it above the bar)."""
    if interactive():
        from tqdm import tqdm

        tqdm.write(message, file=sys.stdout)
    else:
        print(message, flush=True)


def track(items: Iterable[T], total: int | None, description: str, enabled: bool = True, lines: int = 10,
          size: Callable[[T], int] | None = None) -> Iterator[T]:
    """Yield `items`, showing progress towards `total`: a bar on a terminal, else about
    `lines` timestamped lines. Each item counts 1, or `size(item)` (e.g. a batch's images).
    With `total` unknown (None) the lines come every `UNKNOWN_TOTAL_STEP` counts, without ETA."""
    if not enabled:
        yield from items
        return
    if interactive():
        from tqdm import tqdm

        with tqdm(total=total, desc=description, leave=False, file=sys.stderr) as bar:
            for item in items:
                yield item
                bar.update(1 if size is None else size(item))
        return
    step = UNKNOWN_TOTAL_STEP if total is None else max(1, -(-total // max(lines, 1)))
    start, done, shown = time.perf_counter(), 0, 0
    for item in items:
        yield item
        done += 1 if size is None else size(item)
        if done >= shown + step or done == total:
            shown = done
            if total is None:
                message = f"{description} [{done}]"
            else:
                eta = (time.perf_counter() - start) / done * max(total - done, 0)
                message = f"{description} [{done}/{total}] eta {format_duration(eta)}"
            print(stamped(message), file=sys.stderr, flush=True)
