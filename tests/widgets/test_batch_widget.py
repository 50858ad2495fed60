"""The Batch dock in a real viewer: a cohort of tiny phantom series through pipeline.batch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import capture_notifications

pytestmark = pytest.mark.napari

SIZE = 48
TIMEOUT_MS = 300_000


def _write_cohort(root: Path, n: int) -> Path:
    from napari_any2reg.core.phantom import make_phantom
    from napari_any2reg.io import write_tiff

    for k in range(n):
        (root / f"p{k}").mkdir(parents=True, exist_ok=True)
        write_tiff(root / f"p{k}" / "molli.tif", make_phantom("molli", seed=k, shape=(SIZE, SIZE)).sequence)
    return root


@pytest.fixture
def notes(monkeypatch):
    from napari_any2reg.widgets import batch

    return capture_notifications(monkeypatch, batch)


@pytest.fixture
def widget(viewer, qtbot):
    from conftest import plugin_dock

    w = plugin_dock(viewer, "Batch")
    yield w
    w.cancel_all()
    qtbot.waitUntil(lambda: not w.busy(), timeout=TIMEOUT_MS)


def test_cohort_runs_rows_follow_and_summary_opens(viewer, widget, qtbot, tmp_path, notes):
    cohort = _write_cohort(tmp_path / "cohort", 2)
    (cohort / "broken").mkdir()
    (cohort / "broken" / "scan.tif").write_bytes(b"not a tiff")
    out = tmp_path / "out"
    assert not widget.run_button.isEnabled() and not widget.open_button.isEnabled()
    widget.input_edit.setText(str(cohort))
    widget.output_edit.setText(str(out))
    widget.engine_combo.setCurrentIndex(widget.engine_combo.findData("groupwise"))
    widget.iterations_spin.setValue(0.1)
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    assert widget.run_button.isEnabled()

    seen = []
    widget._relay.job_data.connect(lambda token, row: seen.append(row["series"]))
    assert widget.run()
    assert widget.is_running() and not widget.input_edit.isEnabled() and widget.cancel_button.isEnabled()
    assert [r["this_run"] for r in widget.row_texts()] == ["pending"] * 3
    qtbot.waitUntil(lambda: not widget.busy(), timeout=TIMEOUT_MS)

    assert sorted(seen) == sorted(widget.rows)  # one row per series arrived while it ran
    rows = {r["series"]: r for r in widget.row_texts()}
    assert len(rows) == 3
    broken = next(name for name in rows if "broken" in name)
    assert rows[broken]["status"] == "failed" and rows[broken]["error"]
    ok = [name for name in rows if name != broken]
    assert all(rows[name]["status"] == "ok" and rows[name]["this_run"] == "ran" for name in ok)
    with open(out / "summary.csv", newline="") as handle:
        summary = {row["series"]: row for row in csv.DictReader(handle)}
    assert set(summary) == set(rows)
    assert widget.last_report is not None and widget.last_report.n_failed == 1
    assert "3 series: 2 registered" in widget.status_label.text()
    assert notes["error"] == [], notes
    assert widget.open_button.isEnabled() and widget.summary_path().name in ("summary.html", "summary.csv")

    # double-clicking a finished series opens its registered stack
    index = list(widget.rows).index(ok[0])
    (layer,) = widget.open_series(index)
    assert layer.data.shape[1:] == (SIZE, SIZE)
    assert np.isfinite(np.asarray(layer.data)).all()

    # a second run skips the finished series (same settings)
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.busy(), timeout=TIMEOUT_MS)
    rows = {r["series"]: r for r in widget.row_texts()}
    assert all(rows[name]["this_run"] == "skipped" for name in ok)


def test_cancel_stops_between_series_and_problems_are_messages(viewer, widget, qtbot, tmp_path, notes):
    widget.input_edit.setText(str(tmp_path / "missing"))
    widget.output_edit.setText(str(tmp_path / "out"))
    assert not widget.run() and "does not exist" in notes["error"][-1]
    assert not widget.open_summary() and "No summary yet" in notes["error"][-1]

    cohort = _write_cohort(tmp_path / "cohort", 3)
    widget.input_edit.setText(str(cohort))
    widget.engine_combo.setCurrentIndex(widget.engine_combo.findData("groupwise"))
    widget.iterations_spin.setValue(0.1)
    first = []
    widget._relay.job_data.connect(lambda token, row: first.append(row) or widget.cancel())
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.busy(), timeout=TIMEOUT_MS)
    assert first, "no series finished"
    assert "cancelled" in widget.status_label.text()
    texts = widget.row_texts()
    assert sum(r["this_run"] == "ran" for r in texts) < 3  # stopped before the whole cohort
    assert (tmp_path / "out" / "summary.csv").is_file()  # what finished is summarised
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_engine_options_are_the_registration_docks_and_reach_the_run(viewer, widget, qtbot, tmp_path, notes):
    from napari_any2reg.core.engine_api import options_for

    cohort = _write_cohort(tmp_path / "cohort", 1)
    out = tmp_path / "out"
    widget.input_edit.setText(str(cohort))
    widget.output_edit.setText(str(out))
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    widget.engine_combo.setCurrentIndex(widget.engine_combo.findData("groupwise"))
    # every option of the engine has its control, as on the Registration dock
    assert widget.options_form.shown_options() == [o.name for o in options_for("groupwise") if o.name != "reference_frame"]
    widget.options_form.set_option("metric", "pca2")
    widget.options_form.set_option("nonrigid", False)
    widget.iterations_spin.setValue(0.1)
    assert widget.settings().register.engine_options == {"metric": "pca2", "iterations_scale": 0.1, "nonrigid": False}
    assert widget.run()
    assert not widget.options_form.controls["nonrigid"].isEnabled()  # locked while it runs
    qtbot.waitUntil(lambda: not widget.busy(), timeout=TIMEOUT_MS)
    assert notes["error"] == [], notes
    (record,) = [json.loads(path.read_text()) for path in out.glob("*/run.json")]
    assert record["engine"] == "groupwise"
    assert record["engine_options"] == {"metric": "pca2", "iterations_scale": 0.1, "nonrigid": False}
