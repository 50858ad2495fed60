"""The readers' errors and warning, the file endings and timing keys they know, the metadata
keys they add, and the limit on the decoded size of an image (:func:`check_decoded_size`)."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np


FILE_EXTENSIONS = (".ome.tiff", ".ome.tif", ".nii.gz", ".tiff", ".tif", ".nii", ".dcm", ".ima")

#: Sidecar keys that may hold the per-frame timing (first match wins).
TIMING_KEYS = ("timings_ms", "inversion_times_ms", "saturation_times_ms", "trigger_times_ms")

#: Metadata keys the readers add themselves; not copied into exported files.
READER_KEYS = (
    "source", "format", "timings_source", "spacing_source", "kind_source", "sidecar", "read_warnings",
    "nonfinite_mask", "nonfinite_pixels", "geometry_source", "geometry", "scanner_maps",
)

#: Largest image a reader decodes (bytes as float32), unless the environment variable
#: ``ANY2REG_MAX_DECODED_GB`` says otherwise. A cardiac series is at most a few hundred MB (300
#: frames of 512 x 512 is 315 MB); a small compressed file that claims more is corrupt or hostile
#: (a 614 KB TIFF can claim 3 GB) and would exhaust memory before any other check runs.
MAX_DECODED_BYTES = 2 * 1024**3


class SequenceReadError(ValueError):
    """A file or folder cannot be read as a quantitative cardiac sequence.

    The message always names the file (or folder) and the problem and, where possible,
    says how to fix it. A missing path raises a subclass that is also a
    :class:`FileNotFoundError`.
    """


class SequenceFileNotFoundError(SequenceReadError, FileNotFoundError):
    """The path given to a reader does not exist."""


class SequenceReadWarning(UserWarning):
    """A file was read, but something in it was replaced by a default (e.g. an invalid pixel size).

    The same text is kept in ``sequence.metadata["read_warnings"]``.
    """


def check_decoded_size(path: Path, shape: tuple[int, ...], dtype: Any, limit: int | None = None) -> None:
    """Refuse to decode an image whose pixels would exceed :data:`MAX_DECODED_BYTES`.

    Checked from the header, before the pixel data are read, so a corrupt or hostile file
    cannot exhaust memory. The size counts at least 4 bytes per value (frames are float32).
    """
    if limit is None:
        limit = MAX_DECODED_BYTES
        setting = os.environ.get("ANY2REG_MAX_DECODED_GB", "").strip()
        if setting:
            try:
                limit = int(float(setting) * 1e9)
            except ValueError:
                raise SequenceReadError(
                    f"ANY2REG_MAX_DECODED_GB={setting!r} is not a number; set it to a size in GB or unset it."
                ) from None
    limit = int(limit)
    count = math.prod(int(v) for v in shape)
    decoded = count * max(np.dtype(dtype).itemsize, 4)
    if decoded > limit:
        try:
            on_disk = f" from a {_size_text(path.stat().st_size)} file"
        except OSError:
            on_disk = ""
        raise SequenceReadError(
            f"{path}: the header claims {tuple(int(v) for v in shape)} {np.dtype(dtype).name} values, "
            f"{_size_text(decoded)} decoded{on_disk}; more than the {_size_text(limit)} limit for one "
            "sequence. The file is corrupt, or not one cardiac series: save one slice per file or "
            "crop it; if it is genuine, raise the limit with the environment variable "
            "ANY2REG_MAX_DECODED_GB."
        )


def _size_text(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


def special_file_kind(path: Any, *, folders: bool = True) -> str | None:
    """What ``path`` is when it exists but is no regular file: ``"a named pipe (FIFO)"``,
    ``"a socket"``, ``"a device"``, ``"a folder"`` (unless ``folders=False``) or ``"not a
    regular file"``; ``None`` for a regular file or a path that is not there.

    Why: opening a FIFO blocks forever, and a check by ``Path.is_file()`` alone tells the user
    "no such file" about a path that exists. The readers and the side files (field, mask,
    weights, landmarks) use this one rule.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError, TypeError):
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder" if folders else None
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def load_npy(path: Any, *, what: str, mmap_mode: str | None = None) -> np.ndarray:
    """``np.load`` of a ``.npy`` file (no pickles), its failures as one ``ValueError`` naming the
    file and ``what`` it should be: an empty or truncated file raised a bare ``EOFError``."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        reason = "empty or truncated" if isinstance(exc, EOFError) else str(exc)
        raise ValueError(f"{path}: not a readable .npy array ({reason}); give {what}.") from exc
