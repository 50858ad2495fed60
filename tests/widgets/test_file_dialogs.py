"""napari: the docks' file-dialog buttons ("File…", "DICOM folder…", "Browse…") in a real viewer.

The Qt dialog itself needs a person, so its static method is replaced by one that answers as a
user would (a chosen path, or Cancel: an empty string); the buttons are the real ones.
"""

from __future__ import annotations

import pytest
from conftest import plugin_dock

pytestmark = pytest.mark.napari

TIMEOUT_MS = 60_000


def _answer(monkeypatch, module, method: str, answer):
    """Make ``module.QFileDialog.<method>`` return ``answer`` (a path string, or ``(path, filter)``)."""
    monkeypatch.setattr(module.QFileDialog, method, staticmethod(lambda *args, **kwargs: answer))


def _browse_buttons(widget):
    from qtpy.QtWidgets import QPushButton

    return [b for b in widget.findChildren(QPushButton) if b.text() == "Browse…"]


def test_registration_file_button_opens_the_chosen_sequence_and_cancel_opens_nothing(viewer, qtbot, monkeypatch, tmp_path):
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.io.tiff import write_tiff
    from napari_any2reg.widgets import registration

    path = write_tiff(tmp_path / "molli.tif", make_phantom("molli", seed=0, shape=(32, 32), spacing_mm=(4.0, 4.0)).sequence)
    widget = plugin_dock(viewer, "Registration")
    _answer(monkeypatch, registration, "getOpenFileName", ("", ""))
    widget.open_file_button.click()
    assert widget.read_worker is None and len(viewer.layers) == 0
    _answer(monkeypatch, registration, "getOpenFileName", (str(path), "Sequences"))
    widget.open_file_button.click()
    qtbot.waitUntil(lambda: widget.read_worker is None and len(viewer.layers) == 1, timeout=TIMEOUT_MS)
    assert viewer.layers[0].data.shape == (8, 32, 32)
    _answer(monkeypatch, registration, "getExistingDirectory", "")
    widget.open_folder_button.click()  # Cancel in the folder dialog: nothing read
    assert widget.read_worker is None and len(viewer.layers) == 1


def test_export_apply_and_batch_browse_buttons_fill_their_fields(viewer, monkeypatch, tmp_path):
    from napari_any2reg.widgets import apply, batch, export

    export_dock = plugin_dock(viewer, "Export")
    _answer(monkeypatch, export, "getExistingDirectory", str(tmp_path / "out"))
    export_dock.browse_button.click()
    assert export_dock.folder_edit.text() == str(tmp_path / "out")
    _answer(monkeypatch, export, "getExistingDirectory", "")
    export_dock.browse_button.click()  # Cancel keeps the folder
    assert export_dock.folder_edit.text() == str(tmp_path / "out")

    apply_dock = plugin_dock(viewer, "Apply registration")
    _answer(monkeypatch, apply, "getOpenFileName", (str(tmp_path / "displacement.npy"), "Fields"))
    (button,) = _browse_buttons(apply_dock)
    button.click()
    assert apply_dock.field_edit.text() == str(tmp_path / "displacement.npy")

    batch_dock = plugin_dock(viewer, "Batch")
    input_button, output_button = _browse_buttons(batch_dock)
    _answer(monkeypatch, batch, "getExistingDirectory", str(tmp_path / "cohort"))
    input_button.click()
    _answer(monkeypatch, batch, "getExistingDirectory", str(tmp_path / "results"))
    output_button.click()
    assert batch_dock.input_edit.text() == str(tmp_path / "cohort")
    assert batch_dock.output_edit.text() == str(tmp_path / "results")
