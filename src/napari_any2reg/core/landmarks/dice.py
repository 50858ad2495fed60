"""All-pair Dice of raw-frame segmentations before and after warping them to the common grid
(:class:`DiceReport`)."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from typing import Any, Iterable

import numpy as np

from ..metrics import all_pair_dice
from .propagation import _resample_labels
from .table import LandmarkError, _as_field


# ====================================================================== Dice
@dataclasses.dataclass(frozen=True)
class DiceReport:
    """All-pair Dice per label of raw labels (before) and of labels warped to the common grid (after).

    Attributes
    ----------
    before, after : dict of int to float
        Mean Dice over frame pairs ``i < j`` per label value.
    names : dict of int to str
        Display name per label (LV blood pool, LV myocardium, RV blood pool, or ``label k``).
    """

    before: dict[int, float]
    after: dict[int, float]
    names: dict[int, str]

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"label": value, "name": self.names[value], "dice_before": self.before[value], "dice_after": self.after.get(value, float("nan"))}
            for value in self.before
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "definition": "mean Dice over all frame pairs i < j, per label; after = labels warped to the common grid",
            "labels": [{**row, "dice_after": row["dice_after"] if math.isfinite(row["dice_after"]) else None} for row in self.rows()],
        }

    def csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["label", "name", "dice_before", "dice_after"])
        for row in self.rows():
            writer.writerow([row["label"], row["name"], repr(float(row["dice_before"])),
                             repr(float(row["dice_after"])) if math.isfinite(row["dice_after"]) else ""])
        return buffer.getvalue()


def dice_before_after(
    labels: Any,
    displacement: Any = None,
    label_values: Iterable[int] | None = None,
    *,
    method: str = "linear",
) -> DiceReport:
    """All-pair Dice per label before and after warping raw-frame labels to the common grid.

    Parameters
    ----------
    labels : array_like (N, H, W) of int
        A segmentation of every raw frame (0 background; 1 LV blood pool, 2 LV myocardium,
        3 RV blood pool by convention).
    displacement : ndarray (N, 2, H, W), optional
        Pull-back field; the labels are warped like the frames (``labels_i(x + u_i(x))``).
    label_values : iterable of int, optional
        Labels to score; default: every non-zero value present.
    method : {"linear", "nearest"}
        Label resampling: ``"linear"`` (default) warps each label's indicator bilinearly and
        keeps the largest share, so thin structures (the myocardium) are not eroded by
        nearest-neighbour rounding; ``"nearest"`` is :func:`.spatial.warp_labels`.
    """
    from ..mapping.roi import LABEL_NAMES

    stack = np.asarray(labels)
    if stack.ndim != 3 or stack.shape[0] < 2:
        raise LandmarkError(
            f"all-pair Dice needs labels for every frame, (N, H, W) with N >= 2; got shape {stack.shape}. "
            "Propagate a mask drawn on one frame first (propagate_labels)."
        )
    if stack.dtype.kind not in "iub":
        if not np.all(stack == np.round(stack)):
            raise LandmarkError("labels must be whole numbers (0 = background).")
        stack = stack.astype(np.int64)
    values = sorted(int(v) for v in np.unique(stack) if v != 0) if label_values is None else [int(v) for v in label_values]
    if not values:
        raise LandmarkError("the labels are empty (all 0); paint LV, myocardium and/or RV first.")
    names = {v: LABEL_NAMES.get(v, f"label {v}") for v in values}
    before = all_pair_dice(stack, values)
    after: dict[int, float] = {}
    if displacement is not None:
        u = _as_field(displacement)
        if u.shape[0] != stack.shape[0] or u.shape[-2:] != stack.shape[-2:]:
            raise LandmarkError(f"labels {stack.shape} and displacement {u.shape} are not on the same frames and grid.")
        after = all_pair_dice(_resample_labels(stack, u, method), values)
    return DiceReport(before, after, names)
