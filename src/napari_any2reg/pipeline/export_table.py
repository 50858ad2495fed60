"""The export table: one :class:`ExportItem` row per item of :func:`.export.export_registration`.

Each row declares an item once: its name (as the CLI's ``--export`` and the export dock's check
boxes show it), a description, the files it writes (from an :class:`ExportPlan`, before anything
is computed), what it needs (``available``, from the :class:`ExportContext` of one export) and how
it writes them. Planning (:func:`planned_files`), availability (:func:`resolve_items`) and
writing all read this table; :mod:`.export` runs it.

The per-pixel review overlays that make a file (``jacobian``, ``uncertainty``) are rows made
from the overlay registry (:data:`napari_any2reg.core.overlays.OVERLAYS`, an entry with an
``export``): a new entry with one adds its item here, in ``--export`` and on the dock's check
boxes with no edit of this module. :data:`ITEMS` and :data:`EXPORT_ITEMS` are read from the
registry each time (module attributes computed on access). Importing this module loads no torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import numpy as np

from ..core.export import MAP_FILES, MAP_ROLES, json_safe, qc_csv_text, run_record
from ..core.overlays import Overlay, OverlayInputs, export_overlays, missing_input
from ..core.sequence import Sequence

if TYPE_CHECKING:
    from ..core.landmarks import DiceReport, LandmarkTable, TREReport

__all__ = [
    "ExportItem",
    "ExportPlan",
    "ExportContext",
    "ITEMS",
    "EXPORT_ITEMS",
    "MAP_ITEMS",
    "export_items",
    "items_by_name",
    "overlay_inputs",
    "parse_export_items",
    "planned_files",
    "resolve_items",
]


# ====================================================================== the table
@dataclasses.dataclass(frozen=True)
class ExportPlan:
    """What decides the file names of an export before anything is computed.

    Attributes
    ----------
    t1_roles : tuple of str
        The map roles given (``"raw"``, ``"registered"``).
    report_format : {"png", "pdf"}
    n_frames : int, optional
        Frames of the sequence (per-frame files); ``None`` leaves per-frame files out of a
        plan made before the sequence is known.
    scanner_geometry : bool
        The sequence has a scanner geometry: the per-frame ITK fields are then 3-D ``.mha``
        files in scanner coordinates (:func:`napari_any2reg.io.fields.itk_extension`).
    """

    t1_roles: tuple[str, ...] = MAP_ROLES
    report_format: str = "png"
    n_frames: int | None = None
    scanner_geometry: bool = False


@dataclasses.dataclass
class ExportContext:
    """The inputs of one export and what is computed from them before writing."""

    registered: Sequence
    displacement: np.ndarray
    raw: Sequence | None = None
    info: Mapping[str, Any] | None = None
    template: Any = None
    correspondence: Any = None
    displacement_sd: Any = None  # (N, H, W) mm, the network engines' per-pixel uncertainty
    landmarks: LandmarkTable | None = None
    labels: Any = None
    t1_maps: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    input_path: Any = None
    report_format: str = "png"
    command: Any = None
    # computed (nothing is written yet)
    tre: TREReport | None = None
    dice: DiceReport | None = None
    qc: dict[str, Any] | None = None
    qc_table: Any = None
    run_summary: Any = None
    figure: Any = None
    items: tuple[str, ...] = ()
    record: dict[str, Any] | None = None
    destination: Path | None = None  # the export folder (writers get the staging folder)
    segments: Mapping[str, Any] | None = None  # AHA segment statistics shown in the report

    @property
    def spacing_mm(self) -> tuple[float, float]:
        return self.registered.spacing_mm

    @property
    def plan(self) -> ExportPlan:
        return ExportPlan(
            t1_roles=tuple(r for r in MAP_ROLES if r in self.t1_maps),
            report_format=self.report_format,
            n_frames=int(self.displacement.shape[0]),
            scanner_geometry=self.registered.geometry is not None,
        )


_NEED_RAW = "the raw (unregistered) frames are needed; give the source sequence (CLI: it is read from INPUT)"
_NEED_MAPS = "no T1 maps were fitted (CLI: a sequence with timings and a T1 model; napari: run T1 mapping first)"


def _always(context: ExportContext) -> str | None:
    return None


def _needs_raw(context: ExportContext) -> str | None:
    return None if context.raw is not None else _NEED_RAW


def _needs_maps(context: ExportContext) -> str | None:
    return None if context.t1_maps else _NEED_MAPS


def _needs_landmarks(context: ExportContext) -> str | None:
    return None if context.landmarks is not None else "no landmarks given (CLI: --landmarks CSV; napari: choose a Points layer)"


def _needs_labels(context: ExportContext) -> str | None:
    return None if context.labels is not None else "no labels given (a Labels layer (N, H, W) with a segmentation of every frame)"


@dataclasses.dataclass(frozen=True)
class ExportItem:
    """One row of the export table.

    Attributes
    ----------
    name : str
        The item's name in ``--export`` and on the export dock's check box.
    label : str
        A short human name.
    description : str
        What it writes (help text and tooltip).
    files : callable(ExportPlan) -> list of str
        The file names it writes (to refuse an overwrite before any work).
    write : callable(ExportContext, Path)
        Writes the files into the (staging) folder.
    available : callable(ExportContext) -> str or None
        Why the item cannot be written from these inputs, or ``None`` when it can.
    hashes_files : bool
        Written after every other file (the run record lists their SHA-256).
    """

    name: str
    label: str
    description: str
    files: Callable[[ExportPlan], list[str]]
    write: Callable[[ExportContext, Path], None]
    available: Callable[[ExportContext], str | None] = _always
    hashes_files: bool = False


def _json_text(content: Any) -> str:
    return json.dumps(json_safe(content), indent=2, allow_nan=False) + "\n"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- the writers, one per item
def _write_stack(context: ExportContext, folder: Path) -> None:
    from ..io import write_tiff

    write_tiff(folder / "registered.tif", context.registered)


def _write_nifti(context: ExportContext, folder: Path) -> None:
    from ..io import write_nifti

    write_nifti(folder / "registered.nii.gz", context.registered)


def _write_displacement(context: ExportContext, folder: Path) -> None:
    from ..io import save_displacement
    from ..io.fields import displacement_sidecar

    u, spacing = context.displacement, context.spacing_mm
    # the source's place in the scanner travels with the field (the registered NIfTI keeps it too)
    geometry = context.registered.geometry
    save_displacement(folder / "displacement.npy", u)
    save_displacement(folder / "displacement.nii.gz", u, spacing, geometry=geometry)
    (folder / "displacement.json").write_text(_json_text(displacement_sidecar(u, spacing, geometry)), encoding="utf-8")


def _itk_base(scanner_geometry: bool) -> str:
    """``displacement_itk.nii.gz`` (2-D, in-plane), or ``.mha`` (3-D, scanner coordinates)."""
    return "displacement_itk" + (".mha" if scanner_geometry else ".nii.gz")


def _itk_pairs(n_frames: int, scanner_geometry: bool = False) -> list[tuple[str, str]]:
    """Per frame: the ITK field's file name and its elastix parameter file's name."""
    from ..io._common import split_name
    from ..io.fields import itk_frame_paths

    return [(p.name, split_name(p)[0] + ".txt") for p in itk_frame_paths(_itk_base(scanner_geometry), n_frames)]


def _itk_files(plan: ExportPlan) -> list[str]:
    if plan.n_frames is None:
        return []
    return [name for pair in _itk_pairs(plan.n_frames, plan.scanner_geometry) for name in pair]


def _write_itk(context: ExportContext, folder: Path) -> None:
    from ..io.fields import save_displacement_itk, save_elastix_transform

    geometry = context.registered.geometry
    save_displacement_itk(folder / _itk_base(geometry is not None), context.displacement, context.spacing_mm,
                          geometry=geometry)
    # each parameter file names its field relative to itself (the bare file name beside it),
    # so the export folder can be moved or copied (transformix run in it opens the field)
    shape = context.displacement.shape[2:]
    for field, parameters in _itk_pairs(context.displacement.shape[0], geometry is not None):
        save_elastix_transform(folder / field, shape, context.spacing_mm, path=folder / parameters, geometry=geometry)


def overlay_inputs(context: ExportContext) -> OverlayInputs:
    """What the overlay registry's computations read, from the export's inputs."""
    info = dict(context.info or {})
    return OverlayInputs(
        displacement=context.displacement, spacing_mm=context.spacing_mm,
        raw=None if context.raw is None else context.raw.frames, registered=context.registered.frames,
        displacement_sd_mm=None if context.displacement_sd is None else np.asarray(context.displacement_sd, np.float32),
        engine=info.get("engine"), uncertainty_note=(info.get("params") or {}).get("uncertainty"))


def _overlay_item(overlay: Overlay) -> ExportItem:
    """The export row of a registry entry with an ``export`` (a TIFF stack or an ``.npy``)."""
    spec = overlay.export

    def available(context: ExportContext) -> str | None:
        return missing_input(overlay, overlay_inputs(context))

    def write(context: ExportContext, folder: Path) -> None:
        values = np.asarray(overlay.compute(overlay_inputs(context)).values, np.float32)
        if spec.file.endswith(".npy"):
            np.save(folder / spec.file, values)
            return
        from ..io import save_map_tiff

        description = {"quantity": spec.quantity or (overlay.legend.quantity if overlay.legend else overlay.name),
                       "unit": spec.unit or (overlay.legend.unit if overlay.legend else "")}
        description.update(spec.extra(values) if spec.extra is not None else {})
        if spec.note:
            description["note"] = spec.note
        # axes TYX: Fiji opens one map per frame as a hyperstack of frames (issue 24 item 17)
        save_map_tiff(folder / spec.file, values, context.spacing_mm, description, axes="TYX" if values.ndim == 3 else "YX")

    return ExportItem(spec.item, spec.label, spec.description, lambda plan: [spec.file], write, available)


def _map_files(extension: str) -> Callable[[ExportPlan], list[str]]:
    def files(plan: ExportPlan) -> list[str]:
        return [f"{MAP_FILES[k][0]}_{role}{extension}" for role in plan.t1_roles for k in MAP_FILES]

    return files


def _fitted_maps(context: ExportContext):
    """``(role, prefix, quantity, unit, array)`` for every map given, in file order."""
    for role in MAP_ROLES:
        for key, (prefix, quantity, unit) in MAP_FILES.items():
            array = context.t1_maps.get(role, {}).get(key)
            if role in context.t1_maps and array is not None:
                yield role, prefix, quantity, unit, array


def _write_maps(context: ExportContext, folder: Path) -> None:
    from ..io import save_map_tiff

    for role, prefix, quantity, unit, array in _fitted_maps(context):
        save_map_tiff(folder / f"{prefix}_{role}.tif", array, context.spacing_mm,
                      {"quantity": quantity, "unit": unit, "role": role,
                       "frames": "raw" if role == "raw" else "registered (common grid)"}, axes="YX")


def _write_maps_nifti(context: ExportContext, folder: Path) -> None:
    from ..io.maps import write_map_nifti

    # raw and registered frames share the source's grid (the registered frames are resampled
    # onto it), so both roles carry the source geometry
    grid = context.raw if context.raw is not None else context.registered
    for role, prefix, quantity, unit, array in _fitted_maps(context):
        write_map_nifti(folder / f"{prefix}_{role}.nii.gz", array, grid,
                        description=f"napari-any2reg {quantity}" + (f" ({unit})" if unit else "") + f" {role}")


def _write_qc(context: ExportContext, folder: Path) -> None:
    (folder / "qc.json").write_text(_json_text(context.qc), encoding="utf-8")
    (folder / "qc_frames.csv").write_text(qc_csv_text(context.qc_table), encoding="utf-8")


def _write_landmarks(context: ExportContext, folder: Path) -> None:
    from ..core.landmarks import landmarks_to_common
    from ..io.landmarks import write_landmarks_csv

    write_landmarks_csv(folder / "landmarks.csv", context.landmarks)
    write_landmarks_csv(folder / "landmarks_common.csv", landmarks_to_common(context.landmarks, context.displacement))
    (folder / "tre.csv").write_text(context.tre.csv_text(), encoding="utf-8")


def _write_dice(context: ExportContext, folder: Path) -> None:
    (folder / "dice.csv").write_text(context.dice.csv_text(), encoding="utf-8")


def _write_report(context: ExportContext, folder: Path) -> None:
    from ..io.map_input import save_report

    save_report(folder / f"report.{context.report_format}", context.figure, context.report_format)


def _write_record(context: ExportContext, folder: Path) -> None:
    hashes = {p.name: _sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}
    record = run_record(context.info, context.registered, raw=context.raw, input_path=context.input_path,
                        items=context.items, files=hashes, command=context.command)
    if context.qc is not None:
        record["qc"] = {k: context.qc[k] for k in ("folding_percent", "alignment_score_before", "alignment_score_after", "flagged_frames")}
    context.record = record
    (folder / "run.json").write_text(_json_text(record), encoding="utf-8")


#: The items before the overlays' (the registered frames and the field).
_LEADING: tuple[ExportItem, ...] = (
    ExportItem("stack", "Registered stack (TIFF)", "registered frames as TIFF (timings and spacing kept)",
               lambda plan: ["registered.tif"], _write_stack),
    ExportItem("nifti", "Registered stack (NIfTI)", "registered frames as NIfTI + JSON sidecar",
               lambda plan: ["registered.nii.gz", "registered.json"], _write_nifti),
    ExportItem("displacement", "Displacement field", "displacement field (.npy in pixels, NIfTI in mm)",
               lambda plan: ["displacement.npy", "displacement.nii.gz", "displacement.json"], _write_displacement),
    ExportItem("itk", "ITK displacement fields", "one 2-D ITK displacement field per frame (NIfTI, mm; SimpleITK / ANTs) "
               "and its elastix parameter file (transformix)",
               _itk_files, _write_itk),
)

#: The items after the overlays' (maps, QC, landmarks, report, run record).
_TRAILING: tuple[ExportItem, ...] = (
    ExportItem("maps", "T1 maps (TIFF)", "T1, R² and T1 SD maps before/after (TIFF), when fitted",
               _map_files(".tif"), _write_maps, _needs_maps),
    ExportItem("maps_nifti", "T1 maps (NIfTI)", "T1, R² and T1 SD maps before/after as NIfTI on the source geometry, when fitted",
               _map_files(".nii.gz"), _write_maps_nifti, _needs_maps),
    ExportItem("qc", "QC metrics", "QC metrics (JSON and per-frame CSV)",
               lambda plan: ["qc.json", "qc_frames.csv"], _write_qc, _needs_raw),
    ExportItem("landmarks", "Landmarks and TRE", "landmarks and TRE (CSV)",
               lambda plan: ["landmarks.csv", "landmarks_common.csv", "tre.csv"], _write_landmarks, _needs_landmarks),
    ExportItem("dice", "Dice", "all-pair Dice per label (CSV)",
               lambda plan: ["dice.csv"], _write_dice, _needs_labels),
    ExportItem("report", "QC report", "one-page QC report (PNG or PDF)",
               lambda plan: [f"report.{plan.report_format}"], _write_report, _needs_raw),
    ExportItem("record", "Run record", "run record (JSON: version, engine, weights, parameters, device, input)",
               lambda plan: ["run.json"], _write_record, hashes_files=True),
)


def export_items() -> tuple[ExportItem, ...]:
    """The export items, in the order they are listed and written (the overlay registry's
    entries with an export between the field and the maps); also :data:`ITEMS`."""
    return _LEADING + tuple(_overlay_item(o) for o in export_overlays()) + _TRAILING


def items_by_name() -> dict[str, ExportItem]:
    return {item.name: item for item in export_items()}


#: The items written from fitted T1 maps (skipped together when no fit is possible).
MAP_ITEMS: tuple[str, ...] = tuple(item.name for item in _TRAILING if item.available is _needs_maps)


def __getattr__(name: str) -> Any:
    # ITEMS and EXPORT_ITEMS follow the overlay registry (an entry added later adds its item)
    if name == "ITEMS":
        return export_items()
    if name == "EXPORT_ITEMS":  # item name -> description (the names the CLI and the widget use)
        return {item.name: item.description for item in export_items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ====================================================================== planning
def parse_export_items(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    """Normalise ``"all"``, ``"stack,qc"`` or a list of names to a tuple of item names.

    ``"all"`` (alone or in the list) stands for every item (:data:`ITEMS` order).

    Raises
    ------
    ValueError
        For an unknown name, listing the valid ones.
    """
    if spec is None:
        return ()
    names = [s.strip().lower() for s in (spec.replace(";", ",").split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if "all" in names:
        return ("all",)
    known = items_by_name()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown export item(s) {', '.join(map(repr, unknown))}; choose from all, {', '.join(known)}."
        )
    return tuple(n for n in known if n in names)


def planned_files(
    items: Iterable[str], *, t1_roles: Iterable[str] = MAP_ROLES, report_format: str = "png",
    n_frames: int | None = None, scanner_geometry: bool = False,
) -> list[str]:
    """File names the given (resolved) items write: used to refuse an overwrite up front.

    Per-frame files (``itk``) are listed only when ``n_frames`` is given; ``scanner_geometry``
    (the sequence has one) makes them ``.mha``.
    """
    plan = ExportPlan(t1_roles=tuple(t1_roles), report_format=report_format, n_frames=n_frames,
                      scanner_geometry=scanner_geometry)
    known = items_by_name()
    return [name for item in items for name in known[item].files(plan)]


def resolve_items(
    requested: tuple[str, ...], context: ExportContext
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Items to write and items skipped (with why), from a request and the inputs given."""
    missing = {item.name: item.available(context) for item in export_items()}
    if requested == ("all",):
        chosen = tuple(name for name, why in missing.items() if why is None)
        skipped = {name: str(why) for name, why in missing.items() if why is not None}
        return chosen, skipped
    for name in requested:
        if missing[name] is not None:
            raise ValueError(f"cannot export {name!r}: {missing[name]}")
    return requested, {}

