"""The package surface: lazy top-level names resolve and every CLI command answers --help."""
import subprocess
import sys
import textwrap

import pytest

import igoas
from igoas.cli import COMMANDS, main


@pytest.mark.parametrize("name", sorted(set(igoas.__all__) - {"__version__"}))
def test_every_public_name_resolves(name):
    assert callable(getattr(igoas, name))


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute"):
        igoas.no_such_thing  # noqa: B018


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: igoas" in capsys.readouterr().out


def test_no_command_prints_the_command_list(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


@pytest.mark.slow
def test_every_module_but_the_web_page_imports_without_the_optional_extras() -> None:
    """Optional libraries load through `igoas.utils.extras.optional` where they are used, so a
    base install can import (and run `--help` of) everything; only the FastAPI page needs its extra."""
    code = textwrap.dedent("""
        import importlib, pkgutil, sys
        from igoas.utils.extras import EXTRA_OF_MODULE
        for name in EXTRA_OF_MODULE:
            sys.modules[name] = None
        import igoas
        failing = []
        for module in pkgutil.walk_packages(igoas.__path__, "igoas."):
            try:
                importlib.import_module(module.name)
            except ImportError:
                failing.append(module.name)
        print(failing)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['igoas.deploy.serve.app']"
