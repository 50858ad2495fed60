"""The ``any2reg`` dispatcher: one module per command, listed in ``COMMAND_MODULES``."""

import sys
import types

import pytest

from napari_any2reg import cli
from napari_any2reg.cli import COMMAND_MODULES, main


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_every_command_module_is_listed_and_has_its_help(capsys):
    listing = _help([], capsys)
    for name in COMMAND_MODULES:
        module = cli._command_module(name)
        assert callable(module.add_parser) and callable(module.run), name
        assert f"    {name} " in listing, name  # the sub-command list of any2reg --help
        assert f"usage: any2reg {name}" in _help([name], capsys)


def test_a_new_command_module_is_one_entry(monkeypatch, capsys):
    """Adding a command is adding its module to COMMAND_MODULES: help and dispatch follow."""
    hello = types.ModuleType("napari_any2reg.cli.hello")

    def add_parser(subparsers):
        parser = subparsers.add_parser("hello", help="say hello to a sequence")
        parser.add_argument("name")
        return parser

    def run(args):
        print(f"hello {args.name}")
        return 7

    hello.add_parser, hello.run = add_parser, run
    monkeypatch.setitem(sys.modules, "napari_any2reg.cli.hello", hello)
    monkeypatch.setattr(cli, "COMMAND_MODULES", COMMAND_MODULES + ("hello",))
    assert "say hello to a sequence" in _help([], capsys)
    assert main(["hello", "molli"]) == 7
    assert capsys.readouterr().out == "hello molli\n"


def test_only_register_and_batch_read_the_engine_registry():
    assert [name for name in COMMAND_MODULES if cli._uses_engine_flags(name)] == ["register", "batch"]
    assert not cli._uses_engine_flags(None) and not cli._uses_engine_flags("no-such-command")
