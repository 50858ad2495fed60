"""Shared pytest fixtures and helpers.

``tests/`` mirrors ``src/napari_any2reg/`` (``core``, ``io``, ``pipeline``, ``widgets``,
``cli``); the tests of the whole package (architecture, packaging, the scripted screenshots
and the guided tour) stay at the top. Shared pieces live here: the real-data folder, the
viewer, small sample phantoms, adding a dock as the Plugins menu does, notification capture and
the DICOM writer.
"""

import sys
from pathlib import Path

import pytest

# A few widget tests open the series the io / pipeline tests build (a DICOM MOLLI folder, a
# Philips multi-slice export, two moving discs): every test folder is importable by module
# name (pytest's default "prepend" import mode already imports each test file that way), so
# ``from test_io import _dicom_series`` works whichever folder is run alone.
_HERE = Path(__file__).resolve().parent
for _folder in ("core", "io", "pipeline", "widgets", "cli"):
    if str(_HERE / _folder) not in sys.path:
        sys.path.append(str(_HERE / _folder))


#: The napari sample phantoms' size in tests (64 x 64: a registration takes about a second).
SMALL_SAMPLE_SHAPE = (64, 64)


@pytest.fixture
def small_samples(monkeypatch):
    """File > Open Sample gives 64 x 64 phantoms; modules that open samples use it with
    ``pytestmark = [..., pytest.mark.usefixtures("small_samples")]``."""
    from napari_any2reg.widgets import _sample_data

    monkeypatch.setattr(_sample_data, "SAMPLE_SHAPE", SMALL_SAMPLE_SHAPE)


@pytest.fixture
def shared_real_dir():
    """``../shared/data/real`` beside the repository; skips the test when absent."""
    path = _HERE.parents[1] / "shared" / "data" / "real"
    if not path.is_dir():
        pytest.skip("../shared is absent")
    return path


@pytest.fixture
def viewer(make_napari_viewer):
    """A real napari viewer (Xvfb), closed by napari's fixture after the test."""
    return make_napari_viewer()


PLUGIN = "napari-any2reg"


def plugin_dock(viewer, name: str):
    """Add the dock ``name`` as the Plugins menu does (napari hands it a public-only proxy of
    the viewer, as users' docks get) and return the widget."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def capture_notifications(monkeypatch, module) -> dict[str, list[str]]:
    """Replace ``show_error`` / ``show_info`` of ``module`` and of the docks' base
    (``widgets._base``, where the worker errors are reported) by recorders; returns the records."""
    from napari_any2reg.widgets import _base

    calls: dict[str, list[str]] = {"error": [], "info": []}
    for target in {module, _base}:
        monkeypatch.setattr(target, "show_error", lambda msg: calls["error"].append(str(msg)), raising=False)
        monkeypatch.setattr(target, "show_info", lambda msg: calls["info"].append(str(msg)), raising=False)
    return calls


def write_dicom(path, pixels, series_uid: str, *, spacing_mm=(1.5, 1.5), preamble: bool = True,
                private_ti: float | None = None, **fields) -> None:
    """Write one uncompressed MR DICOM image (uint16) as a scanner export would.

    The shared writer of the DICOM tests (reading, geometry, batch discovery, the reader hook):
    ``fields`` are any DICOM keywords (``InversionTime``, ``ImagePositionPatient``,
    ``SOPInstanceUID``...); ``private_ti`` writes the TI only in Philips' private tag
    (2005,1572); ``preamble=False`` writes a bare data set (no preamble, no DICM marker, no file
    meta), as some old exports do.
    """
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = fields.pop("SOPInstanceUID", None) or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.Modality = series_uid, "MR"
    ds.Rows, ds.Columns = np.shape(pixels)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.PixelSpacing = [float(s) for s in spacing_mm]
    for key, value in fields.items():
        setattr(ds, key, value)
    if private_ti is not None:  # Philips: private creator block 0x15 of group 2005, TI in 2005,1572
        ds.add_new((0x2005, 0x0015), "LO", "Philips MR Imaging DD 001")
        ds.add_new((0x2005, 0x1572), "FL", float(private_ti))
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    if preamble:
        ds.save_as(str(path), enforce_file_format=True)
    else:
        del ds.file_meta
        ds.save_as(str(path), enforce_file_format=False, implicit_vr=False, little_endian=True)


@pytest.fixture
def mapping_dock(viewer, qtbot):
    """The "T1 mapping" dock added as the Plugins menu does, fitting on the CPU; a job still
    running at the end of the test is cancelled and awaited (no worker outlives its viewer)."""
    w = plugin_dock(viewer, "T1 mapping")
    w.device_combo.setCurrentIndex(w.device_combo.findData("cpu"))
    yield w
    if w.worker is not None:
        w.cancel()
        qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
