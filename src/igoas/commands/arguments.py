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
