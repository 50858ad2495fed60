"""Save ``docs/screenshot.png``: the MOLLI phantom raw and registered, side by side, in napari.

Headless use (Xvfb gives the OpenGL context napari needs)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshot.py

It opens a 1280x800 viewer with the plugin's MOLLI sample, docks the Registration widget, presses
Run, waits for the result (placed beside the raw frames) and grabs the window.
``tests/test_screenshot_scripts.py`` runs it on a small sample.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "napari-any2reg"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--sample", default="molli", choices=("molli", "stone", "cine"))
    parser.add_argument("--engine", default=None, help="engine (default: the widget's default)")
    parser.add_argument("--iterations-scale", type=float, default=1.0)
    parser.add_argument("--frame", type=int, default=None, help="frame to show (default: most displaced)")
    parser.add_argument("--size", type=int, nargs=2, default=(1280, 800), metavar=("W", "H"),
                        help="window size (default: 1280 800, the small laptop screen the docks must fit)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the run")
    args = parser.parse_args(argv)

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-any2reg", show=True)
    viewer.window.resize(*args.size)
    (source,) = viewer.open_sample(PLUGIN, args.sample)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Registration")
    if args.engine:
        widget.engine_combo.setCurrentIndex(widget.engine_combo.findData(args.engine))
    widget.iterations_spin.setValue(args.iterations_scale)

    app = QApplication.instance()
    start = time.perf_counter()
    if not widget.run():
        print(f"could not start: {widget.status_label.text()}", file=sys.stderr)
        return 1
    while widget.worker is not None:
        app.processEvents()
        time.sleep(0.02)
        if time.perf_counter() - start > args.timeout:
            widget.cancel()
    if widget.last_result is None:
        print(f"registration failed: {widget.status_label.text()}", file=sys.stderr)
        return 1
    print(widget.status_label.text())

    result = widget.last_result
    registered = viewer.layers[f"{source.name} registered"]
    frame = args.frame
    if frame is None:  # show the frame that moved most, where the correction is visible
        frame = int(np.argmax(np.abs(result.displacement).reshape(result.displacement.shape[0], -1).mean(1)))
    viewer.dims.set_current_step(0, frame)

    # the Registration panel puts the registered layer beside the raw one (its default); the
    # plugin's frame label (top left) names the frame, its TI and the layer, as a user sees it
    viewer.layers.selection.active = registered
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.output), canvas_only=False)
    print(f"saved {args.output}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
