"""``any2reg train``: train the Any2Reg network (a thin mapping onto ``pipeline.training.train``).

The configuration flags are not written here: each is the :class:`~napari_any2reg.core.training.CliFlag`
in the metadata of a :class:`~napari_any2reg.core.training.TrainingConfig` field (flag name, help,
metavar, value type, choices), so their help and defaults follow the dataclass. Only the run's
own flags (``--out``, ``--resume``, ``-q``) are declared below.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

#: argparse ``type`` of each :attr:`CliFlag.value`.
_VALUE_TYPES = {"int": int, "float": float, "str": str, "path": str, "paths": str}

DESCRIPTION = (
    "Unsupervised training of the Any2Reg network on random cardiac phantoms (CTE + "
    "regulariser + CAR contrast invariance), with the AdaCS correspondence scorer trained "
    "alternately after a warm-up. Writes OUT/checkpoint.pt (resumable), "
    "OUT/train_log.jsonl (one line per step), OUT/best.pt (lowest validation EPE "
    "ratio on held-out phantoms) and OUT/config.json (the run's settings and command). The field of view is 288 mm, so --size sets the "
    "pixel spacing (96 -> 3 mm, 128 -> 2.25 mm). Ctrl-C checkpoints and stops."
)


def _shown(value: Any) -> str:
    """A default as the command line writes it."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (tuple, list)):
        return ",".join(_shown(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def flag_help(field, flag, defaults) -> str:
    """The help of ``flag`` with ``{default}`` filled from the config (or the flag's own default)."""
    if flag.cli_default is not None:
        value = flag.cli_default
    elif flag.shown is not None:
        value = flag.shown(defaults)
    else:
        value = getattr(defaults, field.name)
    return flag.help.replace("{default}", _shown(value))


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..core.training.config import SETTING_GROUPS, TrainingConfig, cli_flags
    from . import _add_verbosity, _float_pair, _LazyChoices
    from ._common import _output_path

    parser = subparsers.add_parser("train", help="train the Any2Reg network on simulated phantoms", description=DESCRIPTION)
    parser.add_argument("--out", required=True, type=_output_path, help="output folder (created if missing)")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True, help="continue from OUT/checkpoint.pt when present (default: yes)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    defaults = TrainingConfig()
    groups = {name: parser.add_argument_group(f"{name} settings", (cls.__doc__ or "").strip().splitlines()[0])
              for name, cls in SETTING_GROUPS.items()}
    for field, flag, group in cli_flags():
        options: dict[str, Any] = {"default": flag.cli_default, "help": flag_help(field, flag, defaults)}
        if flag.metavar is not None:
            options["metavar"] = flag.metavar
        if flag.value == "bool":
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = _float_pair if flag.value == "range" else _VALUE_TYPES[flag.value]
            if flag.value == "paths":
                options["action"] = "append"
        if flag.choices == "device":
            options["choices"] = _LazyChoices("napari_any2reg.core.device", "DEVICE_CHOICES")
        elif flag.choices is not None:
            options["choices"] = flag.choices
        groups[group].add_argument(flag.flag, dest=flag.dest, **options)
    _add_verbosity(parser)
    return parser


def config_from_args(args: argparse.Namespace):
    """The :class:`TrainingConfig` the parsed flags ask for (a flag not given keeps the field's
    default; a flag with ``requires`` applies only with that field's flag and is an error without it)."""
    from ..core.training.config import TrainingConfig, cli_flags

    defaults = TrainingConfig()
    flags = cli_flags()
    given = {field.name for field, flag, _ in flags if getattr(args, flag.dest, None) is not None and flag.requires is None}
    changes: dict[str, Any] = {}
    for field, flag, _ in flags:
        value = getattr(args, flag.dest, None)
        if value is None:
            continue
        if flag.requires is not None and flag.requires not in given:
            if value is flag.cli_default:  # argparse's own default object: the flag was not typed
                continue
            # a value that would be ignored is a mistake to say, not to drop (nan trained to exit 0)
            needed = next(f.flag for fd, f, _ in flags if fd.name == flag.requires)
            raise ValueError(f"{flag.flag} applies only with {needed}; give {needed} or leave {flag.flag} out")
        if flag.value == "path":
            value = str(Path(value).resolve())
        elif flag.value == "paths":
            value = tuple(str(Path(p).resolve()) for p in value)
        if flag.apply is not None:
            current = {f: changes.get(f, getattr(defaults, f)) for f in ("net", "shape", "spacing_mm")}
            changes.update(flag.apply(value, current))
        else:
            changes[field.name] = value
    if changes.get("num_threads") is not None:  # 10**9 would kill the process (libgomp out of memory)
        from ..core.device import check_threads

        changes["num_threads"] = check_threads(changes["num_threads"])
    return TrainingConfig(**changes)


class _ProgressLines:
    """Prints a line every ``log_every`` steps (means since the last line) and on validations."""

    def __init__(self, config, quiet: bool):
        self.config, self.quiet = config, quiet
        self.recent: list[dict] = []  # entries since the last printed line
        self.recent_scores: list[dict] = []

    def __call__(self, entry: dict) -> None:
        if self.quiet:
            return
        config = self.config
        self.recent.append(entry)
        self.recent_scores.append(entry)
        step = entry["step"]
        validation = "val_epe_ratio" in entry
        if step % config.log_every and step != config.steps and not validation:
            return
        mean = {key: sum(e[key] for e in self.recent) / len(self.recent) for key in ("loss", "cte", "reg", "contrast", "step_seconds")}
        self.recent.clear()
        line = (
            f"step {step}/{config.steps}  loss {mean['loss']:.4f} (cte {mean['cte']:.4f} reg {mean['reg']:.5f} "
            f"contrast {mean['contrast']:.3f})  {mean['step_seconds']:.2f} s/step  {entry['seconds'] / 60:.1f} min"
        )
        scored = [e["score_mean"] for e in self.recent_scores if "score_mean" in e]
        self.recent_scores.clear()
        if scored:
            line += f"  score {sum(scored) / len(scored):.3f}"
        if validation:
            line += f"  val EPE ratio {entry['val_epe_ratio']:.3f}{' *best*' if entry.get('best') else ''}"
        print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    from ..pipeline.training import train

    config = config_from_args(args)
    summary = train(config, Path(args.out), resume=args.resume, log=_ProgressLines(config, args.quiet),
                    command=["any2reg", *getattr(args, "argv", [])])
    if not args.quiet:
        best = summary["best_validation"]
        best_text = f"best val EPE ratio {best['epe_ratio']:.3f} at step {best['step']}" if best else "no validation yet"
        print(
            f"trained steps {summary['start_step']}..{summary['step']} of {config.steps} "
            f"({summary['elapsed_seconds'] / 60:.1f} min in total); {best_text}; "
            f"checkpoint {summary['checkpoint']}, log {summary['log']}"
            + (f", best {summary['best']}" if summary["best"] else "")
        )
    return 0
