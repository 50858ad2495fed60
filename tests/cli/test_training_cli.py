"""``any2reg train``'s flags come from the TrainingConfig fields: one field = one option."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from napari_any2reg.cli import build_parser, main
from napari_any2reg.core.training import config as config_module
from napari_any2reg.core.training.config import CliFlag, TrainingConfig, cli_flags, run_record, setting

#: The flags of ``any2reg train`` as run scripts (training/*/command.sh) use them: renaming one
#: would stop those runs from resuming.
TRAIN_FLAGS = {
    "--out", "--steps", "--seed", "--resume", "--no-resume", "--size", "--lr", "--lambda-reg", "--base-channels",
    "--aggregation", "--auxiliary", "--no-auxiliary", "--validate-every", "--checkpoint-every", "--log-every",
    "--adacs", "--no-adacs", "--adacs-start", "--user-data", "--user-data-probability", "--init-weights",
    "--lambda-supervised", "--zero-motion-probability", "--still-unsupervised-weight", "--motion-mm", "--real-data",
    "--real-data-probability", "--spacing-mm-range", "--size-px-range", "--real-motion-mm", "--real-base",
    "--real-schedule-probability", "--validation-still-seed", "--device", "--threads", "-q", "--quiet",
}


def _train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser(engine_flags=False)._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: action for action in parser._actions for s in action.option_strings}


def test_every_flag_of_the_run_scripts_is_kept():
    assert TRAIN_FLAGS <= set(_options(_train_parser()))


def test_every_field_with_cli_metadata_has_its_flag_and_default():
    options = _options(_train_parser())
    defaults = TrainingConfig()
    flagged = [(field, flag) for field, flag, _ in cli_flags()]
    assert len(flagged) >= 30
    for field, flag in flagged:
        action = options[flag.flag]
        assert action.dest == flag.dest
        assert action.default == flag.cli_default  # None: the field's own default
        if "{default}" in flag.help:
            shown = flag.cli_default if flag.cli_default is not None else (
                flag.shown(defaults) if flag.shown else getattr(defaults, field.name))
            text = {True: "yes", False: "no"}.get(shown, shown) if isinstance(shown, bool) else shown
            if isinstance(text, tuple):
                text = ",".join(f"{v:g}" for v in text)
            elif isinstance(text, float):
                text = f"{text:g}"
            assert f"default: {text}" in action.help, (flag.flag, action.help)
    # the fields without a flag are not settable from the command line; those with one are
    assert {f.name for f, _ in flagged} >= {"steps", "seed", "learning_rate", "motion_mm_range", "net"}


def test_no_flag_gives_the_default_configuration():
    from napari_any2reg.cli.train import config_from_args

    args = _train_parser().parse_args(["--out", "x"])
    assert config_from_args(args) == TrainingConfig()


def test_flags_map_onto_the_fields():
    from napari_any2reg.cli.train import config_from_args

    args = _train_parser().parse_args(["--out", "x", "--size", "128", "--lr", "1e-4", "--base-channels", "8",
                                       "--no-auxiliary", "--motion-mm", "2,9", "--rotation-deg", "0,10",
                                       "--nonrigid-mm", "1,4",
                                       "--real-data", "a.tif", "--real-data", "b.tif", "--no-adacs"])
    config = config_from_args(args)
    assert config.shape == (128, 128) and config.spacing_mm == (2.25, 2.25)
    assert config.learning_rate == 1e-4 and config.motion_mm_range == (2.0, 9.0) and config.adacs is False
    assert config.rotation_deg_range == (0.0, 10.0) and config.nonrigid_mm_range == (1.0, 4.0)
    assert config.net == {"scales": 4, "base_channels": 8, "use_auxiliary": False}
    assert config.user_data_probability == 0.0  # only with --user-data (typed without it: an error,
    # tests/pipeline/test_hostile_inputs_sweep.py)
    assert len(config.real_data_paths) == 2 and config.real_data_probability == 0.3  # the flag's own default
    assert all(p.startswith("/") and p.endswith((".tif")) for p in config.real_data_paths)


def test_a_new_field_with_cli_metadata_becomes_a_flag(monkeypatch):
    """Adding a training option is one dataclass field: the flag, its help and default follow."""
    from napari_any2reg.cli.train import config_from_args

    @dataclasses.dataclass
    class ExtraSettings:
        """Settings of a new kind."""

        curvature_weight: float = setting(0.25, cli=CliFlag("--curvature-weight", "a new loss weight (default: {default})",
                                                            value="float", metavar="W"))

    @dataclasses.dataclass
    class ExtendedConfig(ExtraSettings, TrainingConfig):
        pass

    monkeypatch.setattr(config_module, "SETTING_GROUPS", {**config_module.SETTING_GROUPS, "extra": ExtraSettings})
    monkeypatch.setattr(config_module, "TrainingConfig", ExtendedConfig)
    parser = _train_parser()
    action = _options(parser)["--curvature-weight"]
    assert action.metavar == "W" and "default: 0.25" in action.help
    assert config_from_args(parser.parse_args(["--out", "x"])).curvature_weight == 0.25
    assert config_from_args(parser.parse_args(["--out", "x", "--curvature-weight", "2"])).curvature_weight == 2.0
    assert run_record(ExtendedConfig())["extra"] == {"curvature_weight": 0.25}


def test_bad_size_names_the_flag(capsys):
    assert main(["train", "--out", "x", "--size", "8", "-q"]) == 1
    assert "--size must be at least 16" in capsys.readouterr().err


def test_cli_train_writes_the_run_record(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--steps", "1", "--size", "32", "--base-channels", "4", "--no-adacs", "-q", "--out", str(out)]) == 0
    record = json.loads((out / "config.json").read_text())
    assert record["command"][:2] == ["any2reg", "train"] and "--size" in record["command"]
    assert record["data"]["shape"] == [32, 32] and record["optimisation"]["net"]["base_channels"] == 4
    assert record["schedule"]["steps"] == 1 and record["loss"]["adacs"] is False
    assert record["flags"]["--lr"] == "learning_rate"
    assert {name for group in ("schedule", "data", "augmentation", "loss", "optimisation") for name in record[group]} == {
        f.name for f in dataclasses.fields(TrainingConfig)}


@pytest.mark.parametrize("text", ["--size-px-range", "--spacing-mm-range"])
def test_random_grid_flags_go_together(text, tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--steps", "1", text, "1,2", "-q"]) == 1
    assert "go together" in capsys.readouterr().err
