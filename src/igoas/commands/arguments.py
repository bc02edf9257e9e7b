"""Argument handling shared by the sub-commands that take `[CONFIG] [key=value ...]`."""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Callable

from igoas.utils.errors import IgoasError

# A dotted config override such as `eval.metric=cosine` or `data.root=/data`.
OVERRIDE = re.compile(r"^[A-Za-z_][\w.\[\]-]*=")
CONFIG_SUFFIXES = (".yaml", ".yml")


def is_override(text: str) -> bool:
    """Whether a command-line word is a `key=value` config override rather than a config file or
    preset name: a word naming a file that exists is a config even with an `=` in it
    (`lr=0.1/config.yaml`), and so is a .yaml/.yml word whose part before the `=` is no dotted
    `section.key` (an override such as `data.options.split=x.yaml` stays an override)."""
    if OVERRIDE.match(text) is None:
        return False
    try:
        if Path(text).exists():
            return False
    except OSError:  # a name too long for the file system is no file
        return True
    return "." in text.partition("=")[0] or not text.lower().endswith(CONFIG_SUFFIXES)


def add_overrides(parser: argparse.ArgumentParser, help: str) -> None:
    """The trailing `key=value ...` positional of a sub-command (dotted OmegaConf overrides)."""
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=help)


def split_config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """argparse puts a leading `key=value` in the CONFIG slot; move it back to the overrides."""
    if config is not None and is_override(config):
        return None, [config, *overrides]
    return config, list(overrides)


def bounded_int(low: int, high: int | None = None, name: str = "count", kind: str = "a whole number"
                ) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high], refused at parse time with the range
    instead of failing later as a traceback deep in a library."""
    wanted = f"an integer from {low} to {high}" if high is not None else f"an integer of at least {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}; give {wanted}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{name} {value} is out of range; give {wanted}")
        return value

    parse.__name__ = name   # argparse names the type in its messages
    return parse


port_number = bounded_int(1, 65535, "port", "a port number")
positive_int = bounded_int(1)
non_negative_int = bounded_int(0)
seed_number = bounded_int(0, 2**32 - 1, "seed", "a seed")


def reader_option(text: str) -> tuple[str, object]:
    """KEY=VALUE with the value read as an int or a boolean where it looks like one."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    lowered = value.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    try:
        return key, int(value)
    except ValueError:
        return key, value


def add_reader_options(parser: argparse.ArgumentParser) -> None:
    """`-o/--option KEY=VALUE` (repeatable): keyword options of the dataset reader."""
    parser.add_argument("-o", "--option", action="append", type=reader_option, default=[], metavar="KEY=VALUE",
                        help="a dataset reader option, repeatable: split=half (occluded_reid), variant=labeled "
                             "(cuhk03_np), query_folder=partial_body_images (partial_reid); see docs/datasets.md")


def reader_options(args: argparse.Namespace) -> dict[str, object]:
    """The `-o KEY=VALUE` options as the reader's keywords; refused without the --dataset they are for."""
    if args.option and not args.dataset:
        raise IgoasError("-o/--option sets a dataset reader option: pass it together with --dataset NAME")
    return dict(args.option)
