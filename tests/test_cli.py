"""The command line as a torchreid or fast-reid user meets it: overrides in any position,
--version, and help text on every option of every command."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import igoas
from igoas.cli import COMMANDS, build_parser, main, parse_arguments

# Every command that takes key=value overrides, with its required words, in three orders:
# overrides first, between the positionals and the options, and last (fast-reid's order).
OVERRIDE_COMMANDS = {
    "train": (["my.yaml"], ["--out", "runs/x"]),
    "eval": (["my.yaml"], ["--weights", "w.pth", "--rerank", "--out", "m.json"]),
    "demo": ([], ["--quick", "--out", "runs/d"]),
    "reproduce": (["table1"], ["--root", "/data", "--out", "runs/r"]),
    "ablation": ([], ["--seeds", "1", "--reduced", "--out", "runs/a"]),
    "pretrain": ([], ["--out", "runs/p", "--preset", "synthetic_pretrain"]),
}
OVERRIDES = ["eval.metric=cosine", "data.root=/data/x=y"]


def _parse(argv: list[str]) -> argparse.Namespace:
    return parse_arguments(build_parser(only=argv[0]), argv)


def _walk(parser: argparse.ArgumentParser, path: str = "igoas"):
    """Every (command path, parser) pair below `parser`, itself included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(child, f"{path} {name}")


def _full_tree() -> list[tuple[str, argparse.ArgumentParser]]:
    return [pair for command in COMMANDS for pair in _walk(build_parser(only=command)) if pair[0] != "igoas"
            or command == "demo"]


def test_the_override_commands_are_all_tested() -> None:
    taking = {path.split()[1] for path, parser in _full_tree()
              if any(action.dest == "overrides" for action in parser._actions)}
    assert taking == set(OVERRIDE_COMMANDS)


@pytest.mark.parametrize("command", sorted(OVERRIDE_COMMANDS))
@pytest.mark.parametrize("order", ["first", "middle", "last", "split"])
def test_overrides_are_accepted_in_any_position(command: str, order: str) -> None:
    positionals, options = OVERRIDE_COMMANDS[command]
    argv = {
        "first": [*OVERRIDES, *positionals, *options],
        "middle": [*positionals, *OVERRIDES, *options],
        "last": [*positionals, *options, *OVERRIDES],
        "split": [*positionals, OVERRIDES[0], *options, OVERRIDES[1]],
    }[order]
    args = _parse([command, *argv])
    assert args.overrides == OVERRIDES
    assert [getattr(args, "config", None) or getattr(args, "table", None)] == (positionals or [None])
    if command == "eval":
        assert args.weights == "w.pth" and args.rerank and args.out == "m.json"


def test_an_override_after_the_options_reaches_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    # a bad key placed last must be reported by the config loader, not as an unknown argument
    assert main(["train", "occluded_duke_igoas", "--out", "runs/never", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "optim.lrr" in err and "unrecognized" not in err


def test_a_stray_word_is_still_refused_with_the_command_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "w.pth", "--format", "onnx", "stray"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: igoas export" in err and "unrecognized arguments: stray" in err


def test_two_configs_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "a.yaml", "--out", "x", "b.yaml"])
    assert "unrecognized arguments: b.yaml" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"igoas {igoas.__version__}"


def test_dir_lists_the_lazy_public_names() -> None:
    listed = dir(igoas)
    assert set(igoas.__all__) <= set(listed)
    assert "build_model" in listed and "__version__" in listed
    assert not {"importlib", "annotations", "Any"} & set(listed), "module internals are not API"


def test_every_option_and_subcommand_has_help() -> None:
    missing = []
    for path, parser in _full_tree():
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{path} {choice.dest}" for choice in action._choices_actions if not choice.help]
            elif not (action.help or "").strip():
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, "options without help text: " + ", ".join(missing)


def test_nested_actions_describe_themselves(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, line in ((["data", "stats"], "print the statistics table"), (["viz", "cmc"], "CMC curves of several runs"),
                       (["search", "build"], "index a features file")):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        assert line in capsys.readouterr().out.split("positional arguments")[0], argv


@pytest.mark.parametrize("argv, message", [
    # the checkpoint does not exist: the suffix must be refused before anything is loaded
    (["extract", "missing.pth", "missing_dir", "--out", "features.csv"], "name it .safetensors or .npz"),
    (["viz", "cmc", "features.npz", "--out", "cmc.png"], "a features file (from `igoas extract`)"),
    (["viz", "cmc", "missing.json", "--out", "cmc.png"], "no such file"),
    (["viz", "ranked", "missing.pth", "--dataset", "synthetic", "--root", "x", "--out", "ranked.gif"],
     "figures are written as .png, .jpg, .jpeg, .pdf, .svg"),
    (["viz", "report", "run", "--out", "report.png"], "name it .html"),
    (["viz", "occlusion", "--images", "x.jpg", "-o", "split=half", "--out", "o.png"],
     "-o/--option sets a dataset reader option"),
    (["search", "query", "missing.index", "q.jpg", "--draw", "ranked.bmp"], "figures are written as"),
    # outputs that could not be written at the end are refused first
    (["eval", "--weights", "missing.pth", "--out", "a_folder"], "exists and is not a file"),
    (["extract", "missing.pth", "missing_dir", "--out", "a_file/features.npz"], "a_file is a file"),
    (["import-official", "missing.pth.tar", "--out", "a_file/x.pth"], "a_file is a file"),
    (["robustness", "missing.pth", "--dataset", "synthetic", "--root", "x", "--out", "a_file"], "is not a folder"),
    (["robustness", "a.pth", "b.pth", "--labels", "x,x", "--dataset", "synthetic", "--root", "x", "--out", "out"],
     "--labels names 'x' more than once"),
    (["viz", "distances", "missing.pth", "--dataset", "synthetic", "--root", "x", "--out-dir", "a_file"],
     "is not a folder"),
])
def test_arguments_are_checked_before_any_work(argv: list[str], message: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "features.npz").write_bytes(b"PK\x03\x04")
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("x")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "re-download" not in err


@pytest.mark.parametrize("out", ["DIR #1", "yes", "runs/a: b"])
def test_train_out_reaches_the_run_as_given(out: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    # YAML would cut "#1" as a comment, read "yes" as true and "a: b" as a mapping
    monkeypatch.chdir(tmp_path)  # should the fake miss, a real run lands there and not in the checkout
    import igoas.commands.train as train_command

    given = []

    def fake_train(cfg, **kwargs):
        given.append(cfg.train.output_dir)
        return SimpleNamespace(finished=True, epoch=1, iteration=2, run_dir=cfg.train.output_dir, metrics={},
                               best=None)

    monkeypatch.setattr(train_command, "train", fake_train)
    assert main(["train", "synthetic_demo_quick", "--out", out]) == 0
    assert given == [out] and f"run directory: {out}" in capsys.readouterr().out


@pytest.mark.parametrize("relative", [False, True])
def test_a_config_in_a_folder_with_an_equals_sign_is_a_config(relative: bool, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "lr=0.1"
    folder.mkdir()
    (folder / "config.yaml").write_text("optim:\n  lrr: 0.1\n")  # read, it names its own wrong key
    monkeypatch.chdir(tmp_path)
    config = "lr=0.1/config.yaml" if relative else str(folder / "config.yaml")
    assert main(["train", config, f"train.output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "optim.lrr" in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("word, override", [
    ("data.options.split_file=lists/x.yaml", True),  # a dotted key: an override whatever its value
    ("optim.lr=0.1", True),
    ("lr=0.1/config.yaml", False),  # no dotted key, a YAML name: a config (missing here)
    ("my.yaml", False),
])
def test_override_or_config_word(word: str, override: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from igoas.commands.arguments import is_override

    monkeypatch.chdir(tmp_path)
    assert is_override(word) is override


def test_every_module_of_the_extras_table_is_in_that_extra_of_pyproject() -> None:
    import tomllib

    from igoas.utils.extras import EXTRA_OF_MODULE

    distribution = {"faiss": "faiss-cpu", "skimage": "scikit-image", "multipart": "python-multipart"}
    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    declared = {re.split(r"[<>=!~;\[ ]", requirement)[0].lower(): extra for extra, requirements in extras.items()
                for requirement in requirements if not requirement.startswith("igoas[") and extra != "test"}
    assert {distribution.get(module, module): extra for module, extra in EXTRA_OF_MODULE.items()} == declared


@pytest.mark.parametrize("error, installed, expected", [
    (ModuleNotFoundError("No module named 'faiss'", name="faiss"), False, "pip install 'igoas[search]'"),
    (ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime"), False, "pip install 'igoas[export]'"),
    (ModuleNotFoundError("No module named 'matplotlib.pyplot'", name="matplotlib.pyplot"), False, "igoas[viz]"),
    (ImportError("cannot import name 'x' from 'safetensors'", name="safetensors"), True,
     "installed but fails to import"),
    (ModuleNotFoundError("No module named 'onnx.reference'", name="onnx.reference"), True,
     "pip install -U 'igoas[export]'"),
    (ModuleNotFoundError("No module named 'google'", name="google"), False, "'google', which is not installed"),
    (ModuleNotFoundError("No module named 'torch.gone'", name="torch.gone"), True, None),
    (ModuleNotFoundError("No module named 'igoas.gone'", name="igoas.gone"), True, None),
    (ImportError("cannot import name 'x' from 'numpy'", name="numpy"), True, None),
])
def test_a_missing_library_names_its_extra(error: ImportError, installed: bool, expected: str | None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from igoas.utils import extras

    monkeypatch.setattr(extras, "_installed", lambda module: installed)
    message = extras.missing_module_message(error)
    assert message == expected if expected is None else expected in message and "\n" not in message


def test_a_module_blocked_in_sys_modules_counts_as_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from igoas.utils.extras import _installed

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert not _installed("matplotlib") and _installed("torch")


@pytest.mark.parametrize("command", ["pretrain", "ablation"])
def test_the_long_commands_say_how_long_they_take(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs of hours must not start by surprise: their --help gives the measured duration."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Takes hours on a CPU" in text
    assert re.search(r"\d+(\.\d+)? ?(h|min)\b", text)
