"""The docks' lazily made matplotlib figures (issue 23: opening a dock never imports matplotlib)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_a_lazy_figure_imports_matplotlib_only_when_first_drawn():
    # a fresh interpreter: in the test session matplotlib is long imported
    code = textwrap.dedent("""
        import sys
        from qtpy.QtWidgets import QApplication
        app = QApplication([])
        from napari_any2reg.widgets._plots import LazyFigure
        made = []
        placeholder = LazyFigure((4.0, 2.8), 200, on_created=made.append)
        assert "matplotlib" not in sys.modules and not placeholder.created
        placeholder.draw_idle()  # nothing to draw yet: still nothing imported
        assert "matplotlib" not in sys.modules
        figure = placeholder.figure
        assert "matplotlib.backends.backend_qtagg" in sys.modules and placeholder.created
        assert made == [figure] and placeholder.figure is figure  # made once
        assert placeholder.canvas.figure is figure and placeholder.canvas.minimumHeight() == 200
        assert placeholder.layout().indexOf(placeholder.canvas) == 0
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_showing_the_placeholder_makes_the_figure_only_when_asked(qtbot):
    from napari_any2reg.widgets._plots import LazyFigure

    quiet = LazyFigure((3.0, 2.0), 120)  # a plot always on screen: empty until drawn
    qtbot.addWidget(quiet)
    quiet.show()
    qtbot.waitUntil(quiet.isVisible, timeout=5_000)
    qtbot.wait(20)
    assert not quiet.created

    made = []
    placeholder = LazyFigure((3.0, 2.0), 120, on_created=made.append, make_when_shown=True)
    qtbot.addWidget(placeholder)
    assert not placeholder.created
    placeholder.show()
    qtbot.waitUntil(lambda: placeholder.created, timeout=5_000)
    assert len(made) == 1
    qtbot.waitUntil(placeholder.canvas.isVisible, timeout=5_000)  # Qt shows a child added to a shown widget
