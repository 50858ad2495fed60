"""register / batch engine-option flags come from core.engine_api.ENGINE_OPTIONS and are validated by it."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from napari_any2reg.cli import _cli_engine_options, add_engine_option_flags, build_parser, main
from napari_any2reg.core.engine_api import ENGINE_OPTIONS
from napari_any2reg.pipeline.series import RegisterSettings


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_flags_are_the_registry_options_that_settings_carry(capsys):
    fields = {f.name for f in dataclasses.fields(RegisterSettings)}
    names = [option.name for option in _cli_engine_options()]
    assert names == [option.name for option in ENGINE_OPTIONS if option.name in fields]
    # today's spellings stay
    assert {"reference_frame", "metric", "iterations_scale", "weights", "io_steps"} <= set(names)
    for command in ("register", "batch"):
        text = _help(command, capsys)
        for option in _cli_engine_options():
            assert option.flag in text, (command, option.flag)
            assert " ".join(option.help.split())[:40] in text, (command, option.name)


def test_every_registry_option_makes_a_working_flag():
    parser = argparse.ArgumentParser()
    add_engine_option_flags(parser, ENGINE_OPTIONS)
    assert vars(parser.parse_args([])) == {option.name: None for option in ENGINE_OPTIONS}
    for option in ENGINE_OPTIONS:
        if option.type is bool:
            assert getattr(parser.parse_args([option.flag]), option.name) is True
            assert getattr(parser.parse_args(["--no-" + option.flag[2:]]), option.name) is False
            continue
        value = option.choices[-1] if option.choices else {int: 3, float: 2.5, str: "x.pt"}[option.type]
        parsed = getattr(parser.parse_args([option.flag, str(value)]), option.name)
        assert parsed == value and type(parsed) is option.type, option.name


def test_version_and_top_level_help_skip_the_registry():
    parser = build_parser(engine_flags=False)
    register = parser._subparsers._group_actions[0].choices["register"]
    assert "--metric" not in register.format_help() and "--engine" in register.format_help()


def test_an_option_the_engine_does_not_take_is_one_line_before_any_work(tmp_path, capsys):
    sample = tmp_path / "molli.tif"
    assert main(["sample", "molli", "-o", str(sample), "--size", "32", "--seed", "1"]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["register", str(sample), "-o", str(out), "--engine", "any2reg", "--metric", "pca2", "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "metric" in err and "groupwise" in err
    assert not out.exists()
    # a value outside the registry's range
    assert main(["register", str(sample), "-o", str(out), "--engine", "any2reg-io", "--io-steps", "-2", "-q"]) == 1
    err = capsys.readouterr().err
    assert "--io-steps" in err and "[0, 10000]" in err and not out.exists()
    # batch checks once, before looking for series (even a dry run)
    assert main(["batch", str(sample), "-o", str(tmp_path / "cohort"), "--engine", "xcoreg", "--io-steps", "3", "--dry-run"]) == 1
    assert "io_steps" in capsys.readouterr().err
    # the argparse checks of the flags stay (usage error, exit 2)
    with pytest.raises(SystemExit) as info:
        main(["register", str(sample), "-o", str(out), "--metric", "ssd"])
    assert info.value.code == 2
