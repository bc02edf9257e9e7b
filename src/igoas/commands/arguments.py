"""Argument handling shared by the sub-commands that take `[CONFIG] [key=value ...]`."""
from __future__ import annotations

import argparse


def add_overrides(parser: argparse.ArgumentParser, help: str) -> None:
    """The trailing `key=value ...` positional of a sub-command (dotted OmegaConf overrides)."""
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=help)


def split_config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """argparse puts a leading `key=value` in the CONFIG slot; move it back to the overrides."""
    if config is not None and "=" in config:
        return None, [config, *overrides]
    return config, list(overrides)


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
