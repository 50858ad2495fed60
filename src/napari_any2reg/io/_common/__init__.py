"""Pieces shared by the readers and writers: errors, names, timings, sidecars.

Every reader first collects what the file says in a :class:`_Parts` record and then calls
:func:`build_sequence`, which fills the gaps from a JSON sidecar, applies the caller's
overrides and validates the result once (so a wrong timing count in a sidecar does not
matter when the caller passes ``timings_ms`` explicitly).

Precedence, highest first: explicit keyword argument > the file itself (any2reg JSON,
OME-XML, ImageJ/NIfTI header, DICOM tags) > JSON sidecar > guess from the file name >
default (``kind="unknown"``, ``spacing_mm=(1, 1)``, ``timings_ms=None``).

The subpackage: :mod:`.errors` (errors, limits, known endings and keys), :mod:`.naming` (file
names, kind guess), :mod:`.metadata` (timings as text, JSON metadata, sidecars) and
:mod:`.assembly` (checks, :class:`_Parts`, :func:`build_sequence`, :func:`pick_slice`).
"""

from __future__ import annotations

# Besides __all__, the names the readers and writers import from this path are imported here.
from .assembly import _Parts, build_sequence, check_file, frames_from_axes, pick_slice
from .errors import (
    FILE_EXTENSIONS,
    MAX_DECODED_BYTES,
    READER_KEYS,
    TIMING_KEYS,
    SequenceFileNotFoundError,
    SequenceReadError,
    SequenceReadWarning,
    check_decoded_size,
)
from .metadata import (
    decode_timings,
    encode_timings,
    find_sidecar,
    jsonable_metadata,
    parse_info,
    read_sidecar,
    sequence_header,
)
from .naming import guess_kind, split_name

__all__ = [
    "SequenceReadError",
    "SequenceReadWarning",
    "MAX_DECODED_BYTES",
    "check_decoded_size",
    "FILE_EXTENSIONS",
    "TIMING_KEYS",
    "split_name",
    "guess_kind",
    "encode_timings",
    "decode_timings",
    "jsonable_metadata",
    "sequence_header",
    "find_sidecar",
    "read_sidecar",
    "check_file",
    "frames_from_axes",
    "build_sequence",
]

