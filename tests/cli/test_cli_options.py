"""register / batch engine-option flags come from core.engine_api.ENGINE_OPTIONS and are validated by it."""

from __future__ import annotations

import argparse
import json

import pytest

from napari_any2reg.cli import _cli_engine_options, add_engine_option_flags, build_parser, main
from napari_any2reg.core.engine_api import ENGINE_OPTIONS
from napari_any2reg.pipeline.series import RegisterSettings


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_every_registry_option_is_a_flag_of_register_and_batch(capsys):
    names = [option.name for option in _cli_engine_options()]
    assert names == [option.name for option in ENGINE_OPTIONS]
    # today's spellings stay
    assert {"reference_frame", "metric", "iterations_scale", "weights", "io_steps"} <= set(names)
    for command in ("register", "batch"):
        text = _help(command, capsys)
        for option in _cli_engine_options():
            assert option.flag in text, (command, option.flag)
            assert " ".join(option.help.split())[:40] in text, (command, option.name)
            if option.type is bool:
                assert "--no-" + option.flag[2:] in text, (command, option.name)
        for flag, choices in (("--refinement", "{classical,instance}"), ("--orientations", "{1,2,4}"),
                              ("--metric", "{cte,pca2}")):
            assert f"{flag} {choices}" in text, (command, flag)


def test_settings_validate_the_engine_options_and_key_them():
    settings = RegisterSettings(engine="any2reg-io", engine_options={"io_steps": 2, "coarse": False, "orientations": None})
    assert settings.engine_options == {"io_steps": 2, "coarse": False}  # None: the engine's default
    key = settings.key()
    # the options that were fields keep their place in the key (earlier cohorts still match)
    assert key["io_steps"] == 2 and key["metric"] is None and key["engine_options"] == {"coarse": False}
    assert RegisterSettings(engine="any2reg-io", engine_options={"io_steps": 2}).key() != key
    assert "engine_options" not in RegisterSettings(engine="groupwise", engine_options={"metric": "pca2"}).key()
    with pytest.raises(ValueError, match="io_steps"):
        RegisterSettings(engine="groupwise", engine_options={"io_steps": 2})
    with pytest.raises(ValueError, match="refinement"):
        RegisterSettings(engine="any2reg-io", engine_options={"refinement": "adam"})
    with pytest.raises(ValueError, match="reference_frame"):
        RegisterSettings(engine="groupwise", engine_options={"reference_frame": 1})


def test_register_records_the_engine_options_of_the_command_line(tmp_path, capsys):
    sample = tmp_path / "molli.tif"
    assert main(["sample", "molli", "-o", str(sample), "--size", "48", "--seed", "3"]) == 0
    out = tmp_path / "out"
    argv = ["register", str(sample), "-o", str(out), "--engine", "any2reg-io", "--refinement", "instance",
            "--io-steps", "2", "--no-coarse", "--device", "cpu", "--export", "record", "-q"]
    assert main(argv) == 0, capsys.readouterr().err
    expected = {"refinement": "instance", "io_steps": 2, "coarse": False}
    record = json.loads((out / "run.json").read_text())
    assert record["engine"] == "any2reg-io" and record["engine_options"] == expected
    assert record["params"]["coarse"] is False  # the engine did get the option
    assert json.loads((out / "metrics.json").read_text())["engine_options"] == expected

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
    assert "--io-steps" in capsys.readouterr().err  # the CLI names its flag
    # the argparse checks of the flags stay (usage error, exit 2)
    with pytest.raises(SystemExit) as info:
        main(["register", str(sample), "-o", str(out), "--metric", "ssd"])
    assert info.value.code == 2
