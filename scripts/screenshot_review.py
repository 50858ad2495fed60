"""Save PNGs of the Review overlays on the MOLLI sample into ``docs/``.

Headless use (Xvfb gives the OpenGL context napari needs)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot_review.py

It opens a 1280x800 viewer with the plugin's MOLLI sample, registers it with the Registration widget
(the default engine when its weights are installed, else ``groupwise``), docks the Review
widget, waits for its QC table, adds every overlay and writes:

* ``docs/review_window.png`` — the viewer: raw frame with the deformation grid, the Review panel
  with the QC table (flagged rows highlighted);
* ``docs/review_overlays.png`` — one frame in six panels: raw + grid, registered + Jacobian
  determinant, correspondence scores, difference to the template before and after, checkerboard;
* ``docs/review_profile.png`` — the temporal profile of a myocardial pixel, raw vs registered.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "napari-any2reg"


def _wait(app, condition, timeout: float) -> bool:
    start = time.perf_counter()
    while not condition():
        app.processEvents()
        time.sleep(0.02)
        if time.perf_counter() - start > timeout:
            return False
    return True


def _settle(app, n: int = 15) -> None:
    for _ in range(n):
        app.processEvents()
        time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--sample", default="molli", choices=("molli", "stone", "cine"))
    parser.add_argument("--engine", default=None, help="engine (default: the widget's default if usable)")
    parser.add_argument("--iterations-scale", type=float, default=1.0)
    parser.add_argument("--frame", type=int, default=None, help="frame to show (default: most displaced)")
    parser.add_argument("--size", type=int, nargs=2, default=(1280, 800), metavar=("W", "H"),
                        help="window size (default: 1280 800, the small laptop screen the docks must fit)")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)

    import napari
    import numpy as np
    from matplotlib.figure import Figure
    from qtpy.QtWidgets import QApplication

    from napari_any2reg.core.engines.any2reg import shipped_weights_available

    viewer = napari.Viewer(title="napari-any2reg review", show=True)
    viewer.window.resize(*args.size)
    app = QApplication.instance()
    (source,) = viewer.open_sample(PLUGIN, args.sample)
    _, registration = viewer.window.add_plugin_dock_widget(PLUGIN, "Registration")
    engine = args.engine or (registration.engine() if shipped_weights_available() else "groupwise")
    registration.engine_combo.setCurrentIndex(registration.engine_combo.findData(engine))
    registration.iterations_spin.setValue(args.iterations_scale)
    _, review = viewer.window.add_plugin_dock_widget(PLUGIN, "Review")

    if not registration.run(source):
        print(f"could not start: {registration.status_label.text()}", file=sys.stderr)
        return 1
    _wait(app, lambda: registration.worker is None, args.timeout)
    if registration.last_result is None:
        print(f"registration failed: {registration.status_label.text()}", file=sys.stderr)
        return 1
    print(registration.status_label.text())
    registered = viewer.layers[f"{source.name} registered"]
    if not _wait(app, lambda: review.worker is None and review.review is not None, args.timeout):
        print(f"review did not finish: {review.status_label.text()}", file=sys.stderr)
        return 1
    print("summary:", review.summary_label.text())
    for row in review.table_data.formatted():
        print("  ", " | ".join(row))

    displacement = registered.metadata["displacement"]
    frame = args.frame
    if frame is None:  # the frame that moved most shows the correction best
        frame = int(np.argmax(np.abs(displacement).reshape(len(displacement), -1).mean(1)))

    review.side_by_side(False)  # one layer per panel below: raw and registered on the same spot
    # every overlay, through the widget's own buttons
    review.show_grid()
    review.show_quiver()
    review.show_checkerboard()
    for show in (review.show_jacobian, review.show_folding, review.show_scores, review.show_differences):
        show()
    kinds = ("grid", "quiver", "Jacobian", "folding", "scores", "difference before", "difference after", "checkerboard")
    _wait(app, lambda: all(f"{registered.name} {k}" in viewer.layers for k in kinds) and not review.busy(), args.timeout)
    review.show_profile(*_myocardial_pixel(review.review, registered.data.shape[1:]))
    review.go_to_frame(frame)

    overlays = {name: viewer.layers[f"{registered.name} {name}"] for name in
                ("grid", "quiver", "Jacobian", "folding", "scores", "difference before", "difference after",
                 "checkerboard")}
    overlays["Jacobian"].opacity = 1.0  # shown on its own in the panel
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)

    def only(*layers):
        for layer in viewer.layers:
            layer.visible = any(layer is keep for keep in layers)
        viewer.reset_view()
        _settle(app)
        return viewer.screenshot(canvas_only=True, flash=False)

    # 1. six panels of one frame
    # each panel titled with the legend the frame label shows: quantity, unit, range
    from napari_any2reg.widgets._dock import legend_text

    panels = [
        ("raw + " + legend_text(overlays["grid"]), only(source, overlays["grid"])),
        (legend_text(overlays["Jacobian"]), only(overlays["Jacobian"])),
        (legend_text(overlays["scores"]), only(registered, overlays["scores"])),
        ("before: " + legend_text(overlays["difference before"]).split(" · ")[0], only(overlays["difference before"])),
        ("after: " + legend_text(overlays["difference after"]).split(" · ")[0], only(overlays["difference after"])),
        ("checkerboard raw | registered", only(overlays["checkerboard"])),
    ]
    fig = Figure(figsize=(12, 8.6), dpi=100, layout="constrained")
    for i, (title, image) in enumerate(panels):
        ax = fig.add_subplot(2, 3, i + 1)
        ax.imshow(_crop(image))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{source.name}, frame {frame}: {review.summary_label.text()}", fontsize=11)
    fig.savefig(out / "review_overlays.png")
    print(f"saved {out / 'review_overlays.png'}")

    # 2. the whole window: raw frame with the grid, the QC table in the Review panel
    only(source, overlays["grid"])
    review.tabs.setCurrentIndex(1)
    review.table.selectRow(frame)
    _settle(app, 25)
    viewer.screenshot(str(out / "review_window.png"), canvas_only=False, flash=False)
    print(f"saved {out / 'review_window.png'}")

    # 3. the temporal profile figure of the widget
    review.tabs.setCurrentIndex(2)
    _settle(app)
    review.figure.savefig(out / "review_profile.png", dpi=110)
    print(f"saved {out / 'review_profile.png'}")
    viewer.close()
    return 0


def _myocardial_pixel(review, shape):
    """A pixel near the LV wall where the raw curve is most disturbed (raw vs registered differ most)."""
    import numpy as np

    difference = np.abs(review.difference_before).mean(axis=0)
    h, w = shape
    centre = np.zeros(shape, bool)
    centre[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
    y, x = np.unravel_index(np.argmax(np.where(centre, difference, -np.inf)), shape)
    return float(y), float(x)


def _crop(image):
    """Trim the uniform canvas background around the image."""
    import numpy as np

    rgb = image[..., :3].astype(int)
    background = rgb[0, 0]
    content = np.abs(rgb - background).sum(-1) > 12
    if not content.any():
        return image
    ys, xs = np.nonzero(content)
    return image[max(ys.min() - 4, 0) : ys.max() + 5, max(xs.min() - 4, 0) : xs.max() + 5]


if __name__ == "__main__":
    raise SystemExit(main())
