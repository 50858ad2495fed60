"""Reading and writing quantitative cardiac sequences (no Qt, no napari).

Readers return a :class:`~napari_any2reg.core.sequence.Sequence` (``float32 (N, H, W)``,
timings in ms, spacing ``(dy, dx)`` in mm); every read error is a
:class:`SequenceReadError` whose message names the file. Writers are atomic and never
replace an existing file unless ``overwrite=True``.

=====================  ==========================================================
``read_sequence``      any supported input, with ``kind`` / ``timings_ms`` /
                       ``spacing_mm`` overrides (``slice_index`` for multi-slice data)
``read_slices``        every slice of multi-slice data, one sequence per slice
``read_tiff``          TIFF, ImageJ hyperstack, OME-TIFF
``read_nifti``         ``.nii`` / ``.nii.gz`` (+ JSON sidecar)
``read_dicom_series``  folder / list of single-frame DICOM images
``write_tiff``         ImageJ TIFF (or OME-TIFF for ``.ome.tif``) with any2reg JSON
``write_nifti``        NIfTI + JSON sidecar
``atomic_write``       temp file in the same folder, then ``os.replace``
``supported_path``     cheap extension / DICOM-folder check
``refusal_reason``     the same checks, with the reason (napari's reader hook shows it)
=====================  ==========================================================

``atomic_write_folder`` writes several files into a folder as one unit (all or none; used by
the export and the CLI); ``check_output_folder`` checks a folder can take the outputs before
any work is done. Readers refuse images that decode to more than 2 GiB (environment variable
``ANY2REG_MAX_DECODED_GB``). :mod:`.fields` writes and reads what a registration produces
besides the frames:
``save_displacement`` / ``read_displacement`` (.npy in pixels or NIfTI in mm) and
``save_map_tiff`` / ``read_map_tiff`` (float32 maps with spacing and a JSON description).
:mod:`.maps` writes T1 / R² / SD maps as NIfTI on the source geometry (``write_map_nifti``);
:mod:`.landmarks` reads and writes landmark CSV files (``read_landmarks_csv``,
``write_landmarks_csv``). Those two load torch (core.landmarks), so they are imported on first
use: ``import napari_any2reg.io`` stays light for ``any2reg --help``.
"""

from ._atomic import atomic_write, atomic_write_all, atomic_write_folder, check_output_folder
from ._common import FILE_EXTENSIONS, SequenceReadError, SequenceReadWarning
from ._dispatch import read_sequence, read_slices, refusal_reason, supported_path
from .dicom import read_dicom_series, read_dicom_slices
from .fields import read_displacement, read_map_tiff, save_displacement, save_map_tiff
from .nifti import read_nifti, write_nifti
from .tiff import read_tiff, write_tiff

__all__ = [
    "SequenceReadError",
    "SequenceReadWarning",
    "FILE_EXTENSIONS",
    "read_sequence",
    "read_slices",
    "read_dicom_slices",
    "read_tiff",
    "read_nifti",
    "read_dicom_series",
    "write_tiff",
    "write_nifti",
    "supported_path",
    "refusal_reason",
    "atomic_write",
    "atomic_write_all",
    "atomic_write_folder",
    "check_output_folder",
    "save_displacement",
    "read_displacement",
    "save_map_tiff",
    "read_map_tiff",
]
__all__ += ["read_landmarks_csv", "write_landmarks_csv", "write_map_nifti"]

_LAZY = {"read_landmarks_csv": "landmarks", "write_landmarks_csv": "landmarks", "write_map_nifti": "maps"}


def __getattr__(name: str):
    # PEP 562: the landmark and map writers import core modules that need torch
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
