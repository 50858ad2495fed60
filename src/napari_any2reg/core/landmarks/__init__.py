"""Landmarks, target registration error, propagation through a registration, and all-pair Dice.

Readers check a motion correction by clicking the same anatomical point (e.g. the anterior
and inferior RV insertion points) on every frame; researchers report the target registration
error (TRE) and the Dice overlap of segmentations. Everything here is numpy in, numpy out, with
no Qt / napari: the Landmarks widget, the CLI (``any2reg tre``) and the export call it.

Conventions (``docs/design.md`` §2, §9)
----------------------------------------
* A landmark table holds one row per placed point: ``frame`` (0-based, napari's frame
  slider), ``name``, and the pixel position ``(y, x)`` in that *raw* frame (pixel centres at
  integers, like napari's data coordinates of the image). The pixel spacing ``(dy, dx)`` in mm
  gives the ``y_mm, x_mm`` columns.
* The displacement ``u`` ``(N, 2, H, W)`` is a pull-back: ``registered_i(x) = frame_i(x + u_i(x))``.
  So the common-grid point ``x`` is seen at ``x + u_i(x)`` in raw frame ``i`` (*common →
  frame i needs no inversion*), while a point ``p`` clicked on raw frame ``i`` sits at the
  ``x`` solving ``x + u_i(x) = p`` on the common grid (*frame i → common is an inversion*,
  done by fixed-point iteration in :func:`.spatial.map_points_to_common`).

CSV format
----------
``frame,name,y,x,y_mm,x_mm`` — one header line, then one row per point, positions in pixels
and in mm. Only ``frame,name,y,x`` are required on reading; ``y_mm, x_mm`` (when present) give
the spacing. The Landmarks widget and ``any2reg tre`` read and write exactly this format
(:mod:`napari_any2reg.io.landmarks` reads and writes the files; the text is made and parsed here).

The subpackage: :mod:`.table` (:class:`LandmarkTable`, the constants), :mod:`.csv_text` (the
CSV text), :mod:`.tre` (common grid, TRE), :mod:`.propagation` (points, landmarks, labels) and
:mod:`.dice` (all-pair Dice).
"""

from __future__ import annotations

from .csv_text import landmarks_csv_text, parse_landmarks_csv
from .dice import DiceReport, dice_before_after
from .propagation import label_field_from_frame, propagate_labels, propagate_landmarks, propagate_points
from .table import CSV_COLUMNS, DEFAULT_LANDMARKS, LANDMARK_DESCRIPTIONS, LandmarkError, LandmarkTable
from .tre import TREReport, landmarks_to_common, tre_before_after

__all__ = [
    "DEFAULT_LANDMARKS",
    "LANDMARK_DESCRIPTIONS",
    "CSV_COLUMNS",
    "LandmarkError",
    "LandmarkTable",
    "TREReport",
    "DiceReport",
    "parse_landmarks_csv",
    "landmarks_csv_text",
    "landmarks_to_common",
    "tre_before_after",
    "propagate_points",
    "propagate_landmarks",
    "propagate_labels",
    "label_field_from_frame",
    "dice_before_after",
]
