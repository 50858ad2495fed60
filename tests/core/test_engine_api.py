"""The engine contract: options declared once and matching the engines' signatures."""

from __future__ import annotations

import inspect

import pytest

from napari_any2reg.core import engine_api
from napari_any2reg.core.engine_api import (
    BUILTIN_ENGINES,
    ENGINE_OPTIONS,
    Cancelled,
    EngineOptionError,
    options_for,
    validate_engine_options,
)
from napari_any2reg.core.registration import ENGINES, RegistrationCancelled, available_engines


def test_one_cancellation_exception():
    from napari_any2reg.core import registration
    from napari_any2reg.core.training import loop

    # training catches the same exception the engines raise: a cancel from any widget stops either
    assert RegistrationCancelled is Cancelled
    assert registration.Cancelled is Cancelled and loop.RegistrationCancelled is Cancelled
    assert registration.Progress is engine_api.Progress
    assert registration.EngineOutput is engine_api.EngineOutput


def test_builtin_engines_are_the_registered_ones():
    """Every module in core/engines is imported on first use, and the engines they register are
    exactly BUILTIN_ENGINES (a new engine module not listed there fails here)."""
    import pkgutil
    import sys

    from napari_any2reg.core import engines
    from napari_any2reg.core.engine_api import ENGINES

    available_engines()
    modules = [m.name for m in pkgutil.iter_modules(engines.__path__) if not m.name.startswith("_")]
    assert {"any2reg", "groupwise", "xcoreg"} <= set(modules)
    assert all(f"napari_any2reg.core.engines.{name}" in sys.modules for name in modules)
    shipped = sorted(name for name, fn in ENGINES.items() if fn.__module__.startswith("napari_any2reg.core.engines."))
    assert shipped == sorted(BUILTIN_ENGINES)


def test_option_names_are_declared_once():
    names = [option.name for option in ENGINE_OPTIONS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("engine", BUILTIN_ENGINES)
def test_declared_options_match_the_engine_signature(engine):
    available_engines()
    params = inspect.signature(ENGINES[engine]).parameters
    for option in options_for(engine):
        assert option.name in params, f"{engine} does not take {option.name}"
        default = params[option.name].default
        if option.name != "reference_frame":  # a keyword-only argument without default
            assert default == option.default, (engine, option.name, default, option.default)
        if option.default is not None:
            assert isinstance(option.default, option.type)
    # every user-settable keyword of the engine is declared (arrays are programmatic)
    declared = {o.name for o in options_for(engine)} | {"frames", "progress", "spacing_mm", "unused"}
    declared |= {name for name, engines in engine_api.PROGRAMMATIC_OPTIONS.items() if engine in engines}
    assert set(params) <= declared, set(params) - declared


def test_validate_converts_and_drops_unset():
    checked = validate_engine_options("groupwise", {"metric": "pca2", "iterations_scale": 2, "bins": None})
    assert checked == {"metric": "pca2", "iterations_scale": 2.0}
    assert isinstance(checked["iterations_scale"], float)
    assert validate_engine_options("any2reg-io", {"io_steps": 5.0, "coarse": 0}) == {"io_steps": 5, "coarse": False}


@pytest.mark.parametrize(
    "engine, options, words",
    [
        ("groupwise", {"metric": "mi"}, ["metric", "'cte'", "'pca2'"]),
        ("any2reg", {"orientations": 3}, ["orientations", "1, 2, 4"]),  # the CLI says --orientations
        ("any2reg-io", {"io_steps": -1}, ["io_steps", "[0, 10000]"]),
        ("groupwise", {"iterations_scale": "fast"}, ["iterations_scale", "a number"]),
        ("xcoreg", {"n_classes": 2.5}, ["n_classes", "an integer"]),
        ("any2reg", {"coarse": "yes"}, ["coarse", "true or false"]),
    ],
)
def test_validate_names_option_allowed_values_and_fix(engine, options, words):
    with pytest.raises(ValueError) as info:
        validate_engine_options(engine, options)
    for word in words:
        assert word in str(info.value)
    assert "--" not in str(info.value)  # Python users pass arguments, not flags
    from napari_any2reg.core.vocabulary import speaking

    with speaking("cli"), pytest.raises(ValueError) as info:
        validate_engine_options(engine, options)
    name = next(iter(options))
    assert "--" + name.replace("_", "-") in str(info.value) and f"option {name} " not in str(info.value)


def test_validate_unknown_option_says_which_engine_takes_it():
    with pytest.raises(TypeError, match="unknown option 'metric'.*groupwise") as info:
        validate_engine_options("any2reg", {"metric": "cte"})
    assert isinstance(info.value, EngineOptionError)
    with pytest.raises(TypeError, match="not an engine option"):
        validate_engine_options("groupwise", {"speed": 1})


def test_programmatic_options_pass_unchecked():
    marker = object()
    assert validate_engine_options("groupwise", {"region_mask": marker})["region_mask"] is marker
    with pytest.raises(TypeError):
        validate_engine_options("any2reg", {"region_mask": marker})


def test_register_checks_options_before_any_work():
    import numpy as np

    from napari_any2reg.core.registration import register

    frames = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    with pytest.raises(ValueError, match="metric.*'cte', 'pca2'"):
        register(frames, engine="groupwise", device="cpu", metric="ssd")
    with pytest.raises(TypeError, match="unknown option 'io_steps'.*any2reg-io"):
        register(frames, engine="groupwise", device="cpu", io_steps=3)
    # None means the engine's default (the CLI leaves unset flags as None)
    result = register(frames, engine="groupwise", device="cpu", metric=None, iterations_scale=0.05)
    assert result.params["metric"] == "cte" and result.params["iterations_scale"] == 0.05
