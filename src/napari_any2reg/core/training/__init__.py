"""Unsupervised training of the Any2Reg network on simulated (and optionally real or user)
sequences. numpy / torch only: no file is read or written here.

Modules
-------
config
    :class:`TrainingConfig`, one flat dataclass assembled from grouped settings (data,
    augmentation, loss, optimisation, schedule): the single source of truth of the options,
    of the ``any2reg train`` flags (``cli/train.py`` builds them from the fields' metadata)
    and of the run record (:func:`run_record`).
data
    The training draws: random phantoms, real sequences used semi-synthetically, user
    sequences, on a fixed or random training grid.
loss
    The training loss (CTE, regulariser, group term, CAR contrast invariance, supervised
    end-point term) and the AdaCS scorer's loss.
validation
    The held-out phantoms and the validation score.
payloads
    The checkpoint / weights formats, the shippable weights payload, weight averages and the
    manifest entry (as objects; :mod:`napari_any2reg.io.model_io` reads and writes them).
loop
    The loop itself (:func:`train`), which keeps its state in a :class:`RunStore`.

Files: :func:`napari_any2reg.pipeline.training.train` reads the training data and passes
:class:`napari_any2reg.io.model_io.RunFolder` as the store; ``any2reg train`` calls it.
"""

# Names are loaded from their module on first use (PEP 562): ``core.training.config`` and its
# dataclasses import no torch, so ``any2reg --help`` builds the ``train`` flags at once.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("TrainingConfig", "DataSettings", "AugmentationSettings", "LossSettings", "OptimisationSettings",
                     "ScheduleSettings", "SETTING_GROUPS", "CliFlag", "cli_flags", "run_record", "SEQUENCE_VARIANTS",
                     "REAL_BASES", "VALIDATION_SEED_MIN"), "config"),
    **dict.fromkeys(("TrainingSample", "sample_training_sequence", "RANDOM_MOLLI_SCHEDULES", "_RealData", "_Sampler",
                     "_series_at_random_schedule"), "data"),
    **dict.fromkeys(("ProjectionHead", "training_loss", "scorer_loss"), "loss"),
    **dict.fromkeys(("validation_phantoms", "validate", "spurious_motion_mm"), "validation"),
    **dict.fromkeys(("CHECKPOINT_FORMAT", "WEIGHTS_FORMAT", "FORMAT_VERSION", "check_training_data",
                     "network_from_training_data", "weights_payload", "average_payloads", "manifest_entry"), "payloads"),
    **dict.fromkeys(("RunStore", "train", "learning_rate_at", "check_init_weights"), "loop"),
}

__all__ = [name for name in _EXPORTS if not name.startswith("_")]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
