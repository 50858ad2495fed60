"""The review overlays, declared once: :data:`OVERLAYS`.

Every per-pixel picture of a registration that a reader looks at — the deformation grid, the
arrows, det J, folding, the correspondence scores, the differences to the template, the
checkerboard and the network's displacement SD — is one :class:`Overlay` entry: its name, the
function that computes it (here, numpy / torch only), what it needs, how it is drawn (a kind of
display, a colour map, which layer it lies on), its legend (quantity, unit, note) and, where a
file or a report panel makes sense, its export file (:class:`OverlayExport`) and its QC-report
panel (:class:`OverlayReport`). Three readers use the table and nothing else:

* the Review dock (``widgets/_review_overlays.py``): one button per entry (entries sharing a
  ``group`` share one button), enabled or refused with :func:`missing_input`'s reason, the layer
  drawn by the builder of the entry's ``kind`` (``image``, ``paths``, ``vectors``);
* the export (``pipeline/export.py``): an entry with an ``export`` is an export item
  (``--export`` name, check box, availability, writer);
* the QC report (:mod:`.report`): an entry with a ``report`` is a panel (its frames reduced
  to one image, with a colour bar in its unit).

Adding an overlay is one :func:`register_overlay` call (``docs/architecture.md`` shows one).
No file access, no display code: the computations return arrays (or the grid / arrow
geometry of :mod:`.qc`) and the texts that go with them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping

import numpy as np

__all__ = [
    "Legend",
    "OverlayInputs",
    "OverlayData",
    "OverlayExport",
    "OverlayReport",
    "Overlay",
    "OVERLAYS",
    "KINDS",
    "NEEDS",
    "NETWORK_ENGINES",
    "register_overlay",
    "unregister_overlay",
    "overlay_groups",
    "missing_input",
    "uncertainty_unavailable",
    "uncertainty_note",
    "export_overlays",
    "report_overlays",
]

#: How an overlay is drawn (the Review dock has one layer builder per kind): an ``(N, H, W)``
#: image, grid lines (:class:`.qc.DeformationGrid`) or arrows (:class:`.qc.Quiver`).
KINDS = ("image", "paths", "vectors")

#: What an overlay may need beyond the displacement field: the raw and registered frames
#: (``raw``), the review maps of :func:`.qc.review_registration` (``review``), the network's
#: per-pixel displacement SD (``displacement_sd``).
NEEDS = ("raw", "review", "displacement_sd")

#: Engines that give a per-pixel displacement SD (from the spread over their test-time passes).
NETWORK_ENGINES = ("any2reg", "any2reg-io")


@dataclasses.dataclass(frozen=True)
class Legend:
    """What an overlay's colours mean: ``quantity`` in ``unit`` (``""``: none), and a note."""

    quantity: str
    unit: str = ""
    note: str = ""


@dataclasses.dataclass(frozen=True)
class OverlayInputs:
    """Everything an overlay may be computed from (copies: a worker thread reads them).

    Attributes
    ----------
    displacement : ndarray (N, 2, H, W)
        Pull-back field in pixels ``(dy, dx)``.
    spacing_mm : (dy, dx)
    raw, registered : ndarray (N, H, W), optional
        The frames before and after registration.
    displacement_sd_mm : ndarray (N, H, W), optional
        The network engines' per-pixel displacement SD in mm.
    review : core.qc.Review, optional
        The review maps (scores, differences) once computed.
    engine : str, optional
        The engine of the run (for the reason an input is missing).
    uncertainty_note : str, optional
        The run's ``params["uncertainty"]`` (what its SD is, or why there is none).
    options : dict
        Display choices of the reader (``grid_spacing``, ``grid_unit``, ``quiver_step``,
        ``tiles``, ``raw_limits``); each compute falls back to a default.
    """

    displacement: np.ndarray
    spacing_mm: tuple[float, float] = (1.0, 1.0)
    raw: np.ndarray | None = None
    registered: np.ndarray | None = None
    displacement_sd_mm: np.ndarray | None = None
    review: Any = None
    engine: str | None = None
    uncertainty_note: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class OverlayData:
    """A computed overlay: ``values`` (an ``(N, H, W)`` array, or the grid / arrow geometry),
    the colour ``limits``, one sentence for the status line and display hints (``length``: the
    arrows' drawing scale)."""

    values: Any
    limits: tuple[float, float] | None = None
    status: str = ""
    hints: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class OverlayExport:
    """The overlay as an export item: ``item`` (the ``--export`` name), ``label`` and
    ``description`` (check box and help), ``file`` (``.tif``: an ImageJ map stack per frame with
    ``quantity``, ``unit``, ``note`` and ``extra(values)`` in its description; ``.npy``: float32)."""

    item: str
    label: str
    description: str
    file: str
    quantity: str = ""
    unit: str = ""
    note: str = ""
    extra: Callable[[np.ndarray], dict[str, Any]] | None = None


@dataclasses.dataclass(frozen=True)
class OverlayReport:
    """The overlay as a QC-report panel: its frames reduced to one image (``reduce``: ``max``,
    ``min`` or ``mean`` over frames), drawn with ``colormap`` under ``title``."""

    title: str
    reduce: str = "max"
    colormap: str = "magma"


@dataclasses.dataclass(frozen=True)
class Overlay:
    """One review overlay (see the module docstring).

    Attributes
    ----------
    name : str
        Key of the entry, kept in the overlay layer's metadata.
    suffix : str
        The layer is named ``"<registered layer> <suffix>"``.
    button : str
        Text of the Review dock's button (the group's first entry gives it).
    tooltip : str
    compute : callable(OverlayInputs) -> OverlayData
    kind : str
        One of :data:`KINDS`.
    legend : Legend, optional
        Shown under the frame label (quantity, unit, range, note).
    colormap : str or tuple of RGBA
        A colour map name, or control points from transparent to opaque (a mask).
    opacity : float
    base : {"registered", "source"}
        The layer it lies on: the common grid, or the raw frames (the grid and the arrows show
        where common-grid points land in each raw frame).
    needs : tuple of str
        Of :data:`NEEDS`.
    colorbar : bool
        Show a colour bar (a mask or a picture of the frames has none).
    group : str, optional
        Entries of one group share a button and are shown together, one colour bar for all
        (the last entry's): the differences before and after.
    export : OverlayExport, optional
    report : OverlayReport, optional
    """

    name: str
    suffix: str
    button: str
    tooltip: str
    compute: Callable[[OverlayInputs], OverlayData]
    kind: str = "image"
    legend: Legend | None = None
    colormap: Any = "viridis"
    opacity: float = 1.0
    base: str = "registered"
    needs: tuple[str, ...] = ()
    colorbar: bool = True
    group: str | None = None
    export: OverlayExport | None = None
    report: OverlayReport | None = None

    @property
    def key(self) -> str:
        """The button this entry belongs to (its group, else its name)."""
        return self.group or self.name


#: The registry, in the order the Review dock lists the buttons and the export the items.
OVERLAYS: dict[str, Overlay] = {}


def register_overlay(overlay: Overlay, *, before: str | None = None) -> Overlay:
    """Add ``overlay`` to :data:`OVERLAYS` (at the end, or ``before`` another entry); returns it.

    Raises
    ------
    ValueError
        A name taken, an unknown ``kind`` / need / base, an export item that needs the review
        (the export has no review maps), or a group whose entries would not sit together.
    """
    if overlay.name in OVERLAYS:
        raise ValueError(f"overlay {overlay.name!r} is registered already; choose another name.")
    if overlay.kind not in KINDS:
        raise ValueError(f"overlay {overlay.name!r}: kind {overlay.kind!r}; choose from {', '.join(KINDS)}.")
    unknown = [need for need in overlay.needs if need not in NEEDS]
    if unknown:
        raise ValueError(f"overlay {overlay.name!r}: unknown needs {unknown}; choose from {', '.join(NEEDS)}.")
    if overlay.base not in ("registered", "source"):
        raise ValueError(f"overlay {overlay.name!r}: base {overlay.base!r}; choose 'registered' or 'source'.")
    if (overlay.export is not None or overlay.report is not None) and "review" in overlay.needs:
        raise ValueError(f"overlay {overlay.name!r}: the export and the report have no review maps; "
                         "compute it from the field, the frames or the displacement SD.")
    if overlay.export is not None and any(o.export and o.export.item == overlay.export.item for o in OVERLAYS.values()):
        raise ValueError(f"overlay {overlay.name!r}: export item {overlay.export.item!r} is taken.")
    entries = list(OVERLAYS.values())
    index = len(entries) if before is None else [o.name for o in entries].index(before)
    entries.insert(index, overlay)
    keys = [o.key for o in entries]
    if overlay.group is not None and keys.count(overlay.group) > 1:
        first = keys.index(overlay.group)
        if keys[first:first + keys.count(overlay.group)] != [overlay.group] * keys.count(overlay.group):
            raise ValueError(f"overlay {overlay.name!r}: put it beside the other entries of group {overlay.group!r}.")
    OVERLAYS.clear()
    OVERLAYS.update((o.name, o) for o in entries)
    return overlay


def unregister_overlay(name: str) -> Overlay:
    """Remove the entry ``name`` (a plugin's or a test's); returns it."""
    if name not in OVERLAYS:
        raise KeyError(f"no overlay {name!r}; registered: {', '.join(OVERLAYS)}.")
    return OVERLAYS.pop(name)


def overlay_groups() -> dict[str, list[Overlay]]:
    """Button key -> its entries, in registry order (one button per key)."""
    groups: dict[str, list[Overlay]] = {}
    for overlay in OVERLAYS.values():
        groups.setdefault(overlay.key, []).append(overlay)
    return groups


def uncertainty_unavailable(engine: str | None = None, note: str | None = None) -> str:
    """Why a run has no per-pixel displacement SD, in a user's words (with what gives one)."""
    gives = ("only the network engines (any2reg, any2reg-io) give one, from the spread over their "
             "test-time orientations and shifted inputs")
    if note and str(note).startswith("none"):
        return f"no per-pixel uncertainty in this run ({note})"
    if engine and engine not in NETWORK_ENGINES:
        return (f"no per-pixel uncertainty: the {engine} engine optimises one field per sequence and has no "
                f"spread to report; {gives}")
    return f"no per-pixel uncertainty: {gives}; the classical engines have none"


def uncertainty_note(engine: str | None, note: str | None, available: bool) -> str | None:
    """The note of ``metrics.json`` ``displacement_sd`` (``register``, the report, the Review dock
    alike): the engine's own description (``params["uncertainty"]``) where it gave an SD or said
    why not ("none: ..."), else :func:`uncertainty_unavailable`."""
    if available or (note and str(note).startswith("none")):
        return note
    return uncertainty_unavailable(engine, note)


def missing_input(overlay: Overlay, inputs: OverlayInputs, *, review_pending: bool = False) -> str | None:
    """Why ``overlay`` cannot be computed from ``inputs`` (``None`` when it can).

    ``review_pending``: the review maps will be computed on demand (the Review dock), so a
    missing ``review`` is no reason (the raw frames it needs still are).
    """
    if "displacement_sd" in overlay.needs and inputs.displacement_sd_mm is None:
        return uncertainty_unavailable(inputs.engine, inputs.uncertainty_note)
    if ("raw" in overlay.needs or "review" in overlay.needs) and inputs.raw is None and not review_pending:
        return "the raw (unregistered) frames are needed; open the source sequence"
    if "review" in overlay.needs and inputs.review is None and not review_pending:
        return "the review maps are not computed yet"
    return None


def export_overlays() -> list[Overlay]:
    """Entries with an export item, in registry order."""
    return [o for o in OVERLAYS.values() if o.export is not None]


def report_overlays() -> list[Overlay]:
    """Entries with a QC-report panel, in registry order."""
    return [o for o in OVERLAYS.values() if o.report is not None]


# ====================================================================== the computations
def _option(inputs: OverlayInputs, name: str, default: Any) -> Any:
    value = inputs.options.get(name)
    return default if value is None else value


def _magnitude_limit(values: np.ndarray) -> float:
    return max(float(np.max(values)) if np.size(values) else 0.0, 1e-3)


def _grid(inputs: OverlayInputs) -> OverlayData:
    from . import qc

    u = inputs.displacement
    grid = qc.deformation_grid(u, float(_option(inputs, "grid_spacing", 8.0)), unit=str(_option(inputs, "grid_unit", "px")),
                               spacing_mm=inputs.spacing_mm, step=qc.grid_vertex_step(u.shape[-2:]))
    top = _magnitude_limit(grid.magnitude_mm)
    return OverlayData(grid, (0.0, top), f"Grid: {grid.lines_per_frame} lines per frame; colour = |u| 0–{top:.1f} mm "
                                         "(plasma). Lines show where the common grid lands in each raw frame.")


def _quiver(inputs: OverlayInputs) -> OverlayData:
    from . import qc

    step = float(_option(inputs, "quiver_step", 6.0))
    quiver = qc.quiver_vectors(inputs.displacement, step, spacing_mm=inputs.spacing_mm)
    lengths_px = np.hypot(quiver.vectors[:, 1, 1], quiver.vectors[:, 1, 2])
    factor = qc.arrow_display_scale(lengths_px, step)
    top = _magnitude_limit(quiver.magnitude_mm)
    # drawn longer than the true shift when that is too short to see: the factor is a display
    # hint (the arrows' ``length``), the vectors keep the true shift
    return OverlayData(quiver, (0.0, top), f"Arrows drawn {factor:.1f}× their length; colour = |u| 0–{top:.1f} mm (plasma).",
                       hints={"length": factor})


def _jacobian(inputs: OverlayInputs) -> OverlayData:
    from . import qc
    from .spatial import jacobian_determinant

    det = np.asarray(jacobian_determinant(inputs.displacement), dtype=np.float32)
    limits = qc.jacobian_display_limits(det)
    return OverlayData(det, limits, f"det J: blue < 1 (compression), red > 1 (expansion); "
                                    f"limits {limits[0]:.3f}–{limits[1]:.3f}.")


def _folding(inputs: OverlayInputs) -> OverlayData:
    from . import qc

    folded = qc.folding_mask(inputs.displacement)
    n = int(folded.reshape(len(folded), -1).any(axis=1).sum())
    return OverlayData(folded.astype(np.float32), (0.0, 1.0),
                       f"Folding: {100 * folded.mean():.2f} % of the pixels, in {n} frame(s).")


def _scores(inputs: OverlayInputs) -> OverlayData:
    return OverlayData(np.asarray(inputs.review.scores, dtype=np.float32), (0.0, 1.0))


def _difference_status(limit: float) -> str:
    return (f"Difference to the template at each frame's contrast, ±{limit:.3g} (blue below, red above); "
            "before on the raw frames, after on the registered.")


def _difference(which: str) -> Callable[[OverlayInputs], OverlayData]:
    def compute(inputs: OverlayInputs) -> OverlayData:
        from . import qc

        review = inputs.review
        # one scale for both (the raw frames' spread): before and after read against each other
        limit = qc.symmetric_limit(review.difference_before, 99.5, 1e-6)
        values = review.difference_before if which == "before" else review.difference_after
        return OverlayData(np.asarray(values, dtype=np.float32), (-limit, limit), _difference_status(limit))

    return compute


def _checkerboard(inputs: OverlayInputs) -> OverlayData:
    from . import qc

    board = qc.checkerboard(inputs.raw, inputs.registered, int(_option(inputs, "tiles", 8)))
    limits = inputs.options.get("raw_limits")
    if limits is None:
        finite = board[np.isfinite(board)]
        limits = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return OverlayData(board, tuple(float(v) for v in limits), "Checkerboard: raw and registered frames in alternating tiles.")


def _displacement_sd(inputs: OverlayInputs) -> OverlayData:
    sd = np.asarray(inputs.displacement_sd_mm, dtype=np.float32)
    finite = sd[np.isfinite(sd)]
    top = max(float(np.percentile(finite, 99.5)) if finite.size else 0.0, 0.01)
    what = inputs.uncertainty_note or "spread of the network's displacement over its test-time passes"
    return OverlayData(sd, (0.0, top), f"Displacement SD 0–{top:.2f} mm ({what}).")


def _jacobian_export_extra(det: np.ndarray) -> dict[str, Any]:
    return {"folding_percent": 100.0 * float((np.asarray(det) <= 0).mean())}


#: Transparent where nothing is folded, opaque magenta where det J <= 0.
FOLDING_COLOURS = ((1.0, 0.0, 1.0, 0.0), (1.0, 0.0, 1.0, 1.0))

for _overlay in (
    Overlay("grid", "grid", "Deformation grid",
            "Common-grid lines where they land in each raw frame (overlay the source), coloured by |u| in mm.",
            _grid, kind="paths", legend=Legend("grid colour |u|", "mm", "plasma"), colormap="plasma", opacity=0.9,
            base="source"),
    Overlay("quiver", "quiver", "Displacement arrows",
            "Arrows from common-grid points to where they are found in each raw frame.",
            _quiver, kind="vectors", legend=Legend("arrow colour |u|", "mm", "plasma"), colormap="plasma", base="source"),
    Overlay("jacobian", "Jacobian", "Jacobian det",
            "det(I + ∇u): blue compression, red expansion, 1 = volume kept (limits from the data).",
            _jacobian, legend=Legend("det J", "", "blue shrinks, 1 kept, red grows"), colormap="coolwarm", opacity=0.7,
            export=OverlayExport("jacobian", "Jacobian determinant", "Jacobian determinant maps (TIFF)", "jacobian.tif",
                                 quantity="det(I + grad u)", note="per frame on the common grid; <= 0 is folding",
                                 extra=_jacobian_export_extra)),
    Overlay("folding", "folding", "Folding", "Pixels with det J ≤ 0 (the transform folds).",
            _folding, legend=Legend("folded pixels, det J ≤ 0", "", "magenta"), colormap=FOLDING_COLOURS, colorbar=False),
    Overlay("scores", "scores", "Correspondence",
            "Per-frame correspondence score in [0, 1] (high = the pixel matches the group).",
            _scores, legend=Legend("correspondence score", "", "1 = matches the group"), opacity=0.6, needs=("review",)),
    Overlay("difference_before", "difference before", "Difference to template",
            "Frame minus the intensity-matched template, before and after registration.",
            _difference("before"), legend=Legend("frame − template", "signal", "before: raw, after: reg."),
            colormap="coolwarm", base="source", needs=("review",), group="difference"),
    Overlay("difference_after", "difference after", "Difference to template",
            "Frame minus the intensity-matched template, before and after registration.",
            _difference("after"), legend=Legend("frame − template", "signal", "before: raw, after: reg."),
            colormap="coolwarm", needs=("review",), group="difference"),
    Overlay("checkerboard", "checkerboard", "Checkerboard raw/reg.", "Raw and registered frames in alternating tiles.",
            _checkerboard, colormap="gray", needs=("raw",), colorbar=False),
    Overlay("displacement_sd", "displacement SD", "Displacement SD",
            "Per-pixel SD of the displacement in mm over the network's test-time passes (network engines only).",
            _displacement_sd, legend=Legend("displacement SD", "mm", "spread over the network's passes"),
            colormap="magma", opacity=0.7, needs=("displacement_sd",),
            export=OverlayExport("uncertainty", "Displacement SD",
                                 "per-pixel SD of the displacement in mm, (N, H, W) .npy (network engines)",
                                 "displacement_sd.npy"),
            report=OverlayReport("displacement SD, max over frames", "max", "magma")),
):
    register_overlay(_overlay)
del _overlay


def iter_report_panels(inputs: OverlayInputs) -> Iterator[tuple[Overlay, np.ndarray, tuple[float, float]]]:
    """``(entry, image (H, W), limits)`` of each report panel whose inputs are there."""
    for overlay in report_overlays():
        if missing_input(overlay, inputs) is not None:
            continue
        data = overlay.compute(inputs)
        values = np.asarray(data.values, dtype=np.float32)
        reduce = {"max": np.nanmax, "min": np.nanmin, "mean": np.nanmean}[overlay.report.reduce]
        image = reduce(values, axis=0) if values.ndim == 3 else values
        limits = data.limits if data.limits is not None else (float(np.nanmin(image)), float(np.nanmax(image)))
        yield overlay, image, limits


