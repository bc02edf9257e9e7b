"""The `igoas` command line.

Each sub-command lives in its own module under `igoas.commands` exposing
`add_arguments(parser)` and `run(args) -> int`; modules are imported only when their
command runs, so `igoas --help` stays fast and optional libraries load only where used.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from igoas.commands.arguments import is_override
from igoas.utils.errors import IgoasError, describe_os_error
from igoas.utils.extras import missing_module_message
from igoas.utils.version import __version__

# command name -> (module under igoas.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "generate the synthetic occluded dataset, train IGOAS on it and report"),
    "train": ("train", "train a model from a YAML config with key=value overrides"),
    "eval": ("evaluate", "evaluate a checkpoint on a dataset (R1/R5/R10, mAP, mINP)"),
    "data": ("data", "dataset tools: check a copy, print statistics, render the synthetic set"),
    "extract": ("extract", "write embeddings of a folder or dataset split to a file"),
    "search": ("search", "build and query a FAISS gallery index"),
    "serve": ("serve", "a local web page: search a gallery with a query image, with activation maps"),
    "export": ("export", "export a checkpoint to ONNX or TorchScript and verify it"),
    "viz": ("viz", "draw the paper's figures and a run's HTML report"),
    "robustness": ("robustness", "occlusion stress test or corruption benchmark: R1/mAP under occluders or corruptions"),
    "import-official": ("official", "import a checkpoint trained with the authors' code"),
    "export-official": ("official_export", "write an igoas checkpoint in the authors' key layout"),
    "pretrain": ("pretrain", "train the synthetic-pretrained trunk to use as model.pretrained"),
    "ablation": ("ablation", "train and compare the occlusion methods on the synthetic benchmark"),
    "reproduce": ("reproduce", "run a paper table's recipe and compare with the published numbers"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only the sub-command `only` gets its arguments (the others stay unimported)."""

    parser = argparse.ArgumentParser(prog="igoas", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"igoas {__version__}",
                        help="print the igoas version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            importlib.import_module(f"igoas.commands.{module_name}").add_arguments(sp)
            _describe_actions(sp)
    return parser


def _describe_actions(parser: argparse.ArgumentParser) -> None:
    """Give nested actions (`data stats`, `viz cmc`) their one-line help atop their own --help."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                nested = action.choices[choice.dest]
                nested.description = nested.description or choice.help
                _describe_actions(nested)


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse `argv`, accepting key=value overrides anywhere: before, between or after the options.

    argparse fills a `nargs="*"` positional at its first run of positionals only, so overrides
    after an option (`--weights W eval.metric=cosine`, as fast-reid and torchreid accept) would be
    "unrecognized". For commands that take overrides they are taken out of `argv` first (all but
    the values of options) and handed to the command in the order given.
    """
    command = _command_parser(parser, argv[0] if argv else None)
    overrides: list[str] = []
    if any(action.dest == "overrides" for action in command._actions):
        argv, overrides = _pull_overrides(command, argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported with the sub-command's usage, not the top-level one
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    stray = [word for word in getattr(args, "overrides", None) or [] if not is_override(word)]
    if stray:  # a word argparse gave the overrides slot that is no key=value: never drop it silently
        command.error(f"{stray[0]!r} is not a key=value override (e.g. optim.lr=0.001)")
    if overrides:
        args.overrides = overrides
    return args


def _pull_overrides(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """Split `argv` into the words for argparse and the overrides, keeping options' own values in place."""
    takes = {option: action.nargs for action in parser._actions for option in action.option_strings}
    rest: list[str] = []
    overrides: list[str] = []
    pending = 0  # values still owed to the option just seen
    for position, word in enumerate(argv):
        if word == "--":
            return rest + argv[position:], overrides
        if pending:
            pending -= 1
            rest.append(word)
            continue
        if word in takes:
            nargs = takes[word]
            pending = 1 if nargs is None else nargs if isinstance(nargs, int) else 0
        (overrides if is_override(word) else rest).append(word)
    return rest, overrides


def _command_parser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    """The sub-command's own parser, or the top-level one when `command` is not one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only=command)
    args = parse_arguments(parser, argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(f"igoas.commands.{COMMANDS[args.command][0]}")
    try:
        return int(module.run(args) or 0)
    except IgoasError as err:
        print(f"igoas {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # files and folders the command could not read or write
        print(f"igoas {args.command}: error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except ImportError as err:  # an optional library (matplotlib, faiss, onnx, ...) is missing

        message = missing_module_message(err)
        if message is None:
            raise
        print(f"igoas {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        detail = f": {err}" if str(err) else ""  # atomic_write says which file it kept
        print(f"igoas {args.command}: interrupted{detail}", file=sys.stderr)
        return 130
