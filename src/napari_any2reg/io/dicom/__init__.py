"""DICOM series reading: classic single-frame and enhanced multi-frame MR images.

Selection
---------
Every regular file in the folder (not sub-folders; hidden files and ``DICOMDIR`` are
skipped) is tried with pydicom; files without the 128-byte preamble are read when they start
like a DICOM data set (``force=True``); files that are not DICOM images are ignored. Files
larger than the decode limit are skipped unread, and a folder whose headers take longer than
``ANY2REG_DICOM_SCAN_SECONDS`` (default 120 s) to scan stops with an error naming the slowest
file, so one junk file cannot stall a read. Images are grouped by SeriesInstanceUID. With
several series, the one with the most frames is read and the others are listed in
``metadata["dicom_other_series"]``; when the largest series are tied the read fails and lists
them (put one series per folder, or pass the list of files). A file seen twice (same
SOPInstanceUID, e.g. a copy) is read once, with a :class:`SequenceReadWarning`.

Slices
------
The frames are grouped by slice position (ImagePositionPatient rounded to 0.1 mm) and the
slices sorted along the slice normal (IOP row x column direction): one :class:`_Parts`, hence
one sequence, per slice (:func:`read_dicom_slices`). Enhanced multi-frame MR files (per-frame
functional groups: plane position / orientation, pixel measures, MR modifier inversion times,
cardiac trigger delay, pixel value transformation) are split into the same per-frame records.

Frame order and timings (within one slice)
------------------------------------------
1. InversionTime (0018,0082) (enhanced: InversionTimes (0018,9079) of the MR modifier) when
   every frame has one and the values differ;
2. else the Philips private inversion delay (2005,1572) (the tag dcm2niix reads for Philips
   MOLLI, whose standard tag is often absent or constant);
3. else a TI parsed from ImageComments (0020,4000) (``"TI 120"``, ``"TI=120ms"``,
   ``"T1 prep TI: 120.5"``) when every frame has one and they differ (Siemens MOLLI);
4. else EchoTime (0018,0081) (enhanced: EffectiveEchoTime (0018,9082) of the MR echo
   functional group) when every frame has one and they differ: a multi-echo series (kind
   ``mge`` when ScanningSequence says gradient echo and the description names no other kind;
   the echo times are the timings of the T2 / T2* fit);
5. else TriggerTime (0018,1060) (enhanced: NominalCardiacTriggerDelayTime (0020,9153)) when
   every frame has one and they differ (cine: kind ``cine`` unless the series description
   says otherwise; never for MOLLI / STONE / SASHA / IR series, whose fit needs preparation
   times, not trigger delays);
6. else InstanceNumber (enhanced: the frame number), and no timings. Two frames that nothing
   orders (same timing and the same InstanceNumber) are an error, not a silent guess.

Pixel values are ``stored * RescaleSlope + RescaleIntercept``; spacing is PixelSpacing
``(row spacing, column spacing) = (dy, dx)``; ImageOrientationPatient / ImagePositionPatient
become the sequence's :class:`~napari_any2reg.core.geometry.SliceGeometry`. Only
non-identifying acquisition fields are copied to ``metadata["dicom"]`` (no names, IDs, dates
or UIDs). Compressed transfer syntaxes (JPEG, JPEG-LS, JPEG 2000) need the ``[dicom]`` extra
(``pip install napari-any2reg[dicom]``: pylibjpeg decoders).

The subpackage: :mod:`.scan` (which files are DICOM, header scan, series choice, cohort
search), :mod:`.frames` (per-image records, slices, frame order and timings, pixels) and
:mod:`.reader` (:func:`read_dicom_series`, :func:`read_dicom_slices`).
"""

from __future__ import annotations

# Besides __all__, the names that other modules import from this path (napari's reader hook,
# the dispatcher, the tests) are imported here too.
from .reader import _dicom_parts, _dicom_parts_list, read_dicom_series, read_dicom_slices
from .scan import NOT_DICOM, find_dicom_series, has_dicom_content, looks_like_dicom, parse_ti_comment

__all__ = [
    "read_dicom_series",
    "read_dicom_slices",
    "parse_ti_comment",
    "looks_like_dicom",
    "find_dicom_series",
]
