"""Review of a registration: overlays, a per-frame QC table with flags, and a run summary.

Everything a reader needs to decide whether a motion correction can be trusted, computed from
the raw frames, the registered frames and the pull-back displacement (``docs/design.md`` §2, §9).
Small pure functions on numpy arrays; no Qt / napari (the Review widget only turns the results
into layers).

Which grid is which
-------------------
The registered frames live on the *common* grid ``x``; raw frame ``i`` shows the anatomy at
``x + u_i(x)`` (pull-back). :func:`deformation_grid` draws the lines of a regular grid laid on
the common grid *where they land in raw frame i*: vertex ``p`` of a line is drawn at
``p + u_i(p)``. Overlaid on the raw sequence, the grid therefore moves with the anatomy from
frame to frame (it is a "tissue-attached" grid), and it needs no inversion of the field (a
constant shift ``t`` moves every line by exactly ``t``). :func:`quiver_vectors` uses the same
reading: an arrow starts at a common-grid point and ends where that point is found in frame i.

Where statistics are taken
--------------------------
Deformation statistics (displacement, folding, Jacobian) are over the whole field: a fold
anywhere means the transform is not physically plausible. Intensity statistics (correspondence
score, correlation with the template, alignment) are inside a region of interest, by default
the central box of :func:`.metrics.default_roi` (cardiac scans centre the heart), because the
noise-only background has no structure to correspond.

The subpackage: :mod:`.deformation` (grids, arrows, Jacobian, display settings),
:mod:`.intensities` (correspondence, templates, comparisons), :mod:`.table` (thresholds, flags,
the per-frame table) and :mod:`.review` (run summary, :func:`review_registration`).
"""

from __future__ import annotations

from .deformation import (
    DeformationGrid,
    Quiver,
    arrow_display_scale,
    deformation_grid,
    displacement_magnitude_mm,
    folding_mask,
    grid_line_positions,
    grid_line_width,
    grid_spacing_pixels,
    grid_vertex_step,
    jacobian_display_limits,
    jacobian_gradient_norm,
    log_jacobian_std,
    quiver_vectors,
    symmetric_limit,
)
from .intensities import (
    checkerboard,
    correspondence_maps,
    curtain,
    frame_templates,
    matched_template,
    sequence_template,
    template_correlation,
    template_difference,
    temporal_profile,
)
from .review import Review, RunSummary, review_registration, run_summary
from .table import FrameQC, QCTable, QCThresholds, flag_reasons, frame_qc_table

__all__ = [
    "DeformationGrid",
    "Quiver",
    "QCThresholds",
    "FrameQC",
    "QCTable",
    "RunSummary",
    "Review",
    "grid_line_positions",
    "grid_spacing_pixels",
    "deformation_grid",
    "quiver_vectors",
    "displacement_magnitude_mm",
    "folding_mask",
    "log_jacobian_std",
    "jacobian_gradient_norm",
    "correspondence_maps",
    "template_correlation",
    "matched_template",
    "frame_templates",
    "template_difference",
    "sequence_template",
    "checkerboard",
    "curtain",
    "temporal_profile",
    "flag_reasons",
    "frame_qc_table",
    "run_summary",
    "review_registration",
    "grid_line_width",
    "grid_vertex_step",
    "arrow_display_scale",
    "jacobian_display_limits",
    "symmetric_limit",
]
