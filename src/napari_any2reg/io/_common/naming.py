"""What a file name says: its stem and extension (:func:`split_name`, multi-part endings such as
``.ome.tif`` and ``.nii.gz`` kept whole) and the sequence kind it suggests (:func:`guess_kind`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .errors import FILE_EXTENSIONS


# ---------------------------------------------------------------------------- names
def split_name(path: str | Path) -> tuple[str, str]:
    """Split a file name into stem and (compound) extension.

    Parameters
    ----------
    path : str or Path
        File path; only the name is used.

    Returns
    -------
    stem, ext : str
        ``ext`` is lower-case and includes the dot (``".nii.gz"``, ``".ome.tif"``); it is
        ``""`` for a name without extension.

    Examples
    --------
    >>> split_name("scan.OME.tif")
    ('scan', '.ome.tif')
    >>> split_name("t1.nii.gz")
    ('t1', '.nii.gz')
    """
    name = Path(path).name
    lower = name.lower()
    for ext in FILE_EXTENSIONS + (".json", ".npy"):
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], ext
    suffix = Path(name).suffix
    return (name[: -len(suffix)], suffix.lower()) if suffix else (name, "")


_KIND_RULES = (
    ("molli", lambda t: "molli" in t),  # molli, shmolli, mollimoco
    ("sasha", lambda t: "sasha" in t),
    ("stone", lambda t: t.startswith("stone")),
    ("cine", lambda t: t.startswith("cine") or (t.endswith("cine") and not t.endswith("medicine"))),
    ("perfusion", lambda t: t.startswith("perf")),
    ("asl", lambda t: t == "asl" or t.endswith("asl")),  # asl, pcasl, pasl, fairasl
    ("t2prep", lambda t: t.startswith("t2prep")),  # t2prep, t2prepssfp
    ("mge", lambda t: t in ("mge", "megre", "t2s") or t.startswith("t2star")),  # multi-gradient echo T2*
)


def guess_kind(*texts: Any) -> str | None:
    """Guess the sequence kind from names such as a file name or SeriesDescription.

    Parameters
    ----------
    *texts : str
        Texts to search, most specific first; ``None`` entries are skipped.

    Returns
    -------
    str or None
        One of ``molli``, ``sasha``, ``stone``, ``cine``, ``perfusion``, ``asl``, ``t2prep``,
        ``mge``, or ``None`` when nothing matches.

    Examples
    --------
    >>> guess_kind("stone_0138_slice4_t1map")
    'stone'
    >>> guess_kind("ShMOLLI_192i") , guess_kind("tfl_perf_SR"), guess_kind("t1map")
    ('molli', 'perfusion', None)
    """
    for text in texts:
        if not text:
            continue
        tokens = [t for t in re.split(r"[^a-z0-9]+", str(text).lower()) if t]
        for kind, rule in _KIND_RULES:
            if any(rule(token) for token in tokens):
                return kind
    return None
