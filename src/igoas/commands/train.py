"""`igoas train CONFIG [key=value ...]` and `igoas train --resume RUN_DIR [key=value ...]`."""
from __future__ import annotations

import argparse

from igoas.commands.arguments import add_overrides, split_config_and_overrides
from igoas.config import load_config, preset_names
from igoas.training.trainer import train
from igoas.utils.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config file or preset name (see `igoas train --presets`)")
    add_overrides(parser, "dotted overrides applied last, e.g. optim.lr=0.001 data.root=/data")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from checkpoints/last.pth (its saved config, plus overrides)")
    parser.add_argument("--out", metavar="DIR", help="run directory (same as train.output_dir=DIR)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run files (checkpoints, logs, metrics) of a non-empty run directory")
    parser.add_argument("--presets", action="store_true", help="list the shipped presets and exit")


def run(args: argparse.Namespace) -> int:
    if args.presets:
        print("\n".join(preset_names()))
        return 0
    config, overrides = split_config_and_overrides(args.config, args.overrides)
    if args.resume:
        if args.out:
            raise ConfigError("--resume continues in the run's own directory; drop --out")
        result = train(load_config(config, overrides) if config else None, resume=args.resume,
                       overrides=() if config else overrides)
    else:
        if config is None and not overrides:
            raise ConfigError("give a config file or preset (e.g. `igoas train occluded_duke_igoas`), overrides of "
                              "the defaults (e.g. `igoas train data.root=data`), or --resume RUN_DIR")
        cfg = load_config(config, overrides)
        if args.out:  # set on the config, not as an override, so YAML never reads the path ("#", "yes", ": ")
            cfg.train.output_dir = args.out
        result = train(cfg, overwrite=args.overwrite)
    state = "finished" if result.finished else "stopped early (resumable)"
    print(f"{state} at epoch {result.epoch}, iteration {result.iteration}; run directory: {result.run_dir}")
    for name, values in result.metrics.items():
        print(f"  {name}: " + "  ".join(f"{key} {value:.1f}" for key, value in values.items()))
    if result.best:
        print(f"  best {result.best['query_set']} mAP {result.best['mAP']:.1f} at epoch {result.best['epoch']}: "
              f"{result.best_checkpoint}")
    return 0
