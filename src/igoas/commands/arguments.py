"""Argument handling shared by the sub-commands that take `[CONFIG] [key=value ...]`."""
from __future__ import annotations


def split_config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """argparse puts a leading `key=value` in the CONFIG slot; move it back to the overrides."""
    if config is not None and "=" in config:
        return None, [config, *overrides]
    return config, list(overrides)
