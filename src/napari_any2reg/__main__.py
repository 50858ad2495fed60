"""``python -m napari_any2reg``: open napari with a phantom (or a file) and the Registration widget.

Examples::

    python -m napari_any2reg                       # MOLLI 5(3)3 phantom, widget docked
    python -m napari_any2reg --sample stone --register
    python -m napari_any2reg scan.nii.gz --engine xcoreg
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import napari

PLUGIN = "napari-any2reg"
SAMPLES = ("molli", "stone", "cine")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m napari_any2reg",
        description=(
            "Open napari with a cardiac MRI sequence and the Any2Reg Registration widget. "
            "Without a path, a seeded motion phantom is loaded."
        ),
    )
    parser.add_argument(
        "path", nargs="?", help="sequence to open (.tif/.tiff/.ome.tif, .nii/.nii.gz, DICOM folder)"
    )
    parser.add_argument(
        "--sample", choices=SAMPLES, default="molli", help="phantom to load when no path is given"
    )
    parser.add_argument("--register", action="store_true", help="press Run once the data is loaded")
    parser.add_argument("--engine", help="engine selected in the widget (default: the widget's)")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), help="device selected in the widget"
    )
    return parser


def setup_viewer(args: argparse.Namespace, viewer: "napari.Viewer | None" = None) -> tuple[Any, Any]:
    """Load the data and dock the Registration widget; returns ``(viewer, widget)``."""
    import napari

    if viewer is None:
        viewer = napari.Viewer(title="napari-any2reg")
    if args.path:
        viewer.open(args.path, plugin=PLUGIN)
    else:
        viewer.open_sample(PLUGIN, args.sample)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Registration")
    if args.engine:
        index = widget.engine_combo.findData(args.engine)
        if index < 0:
            raise SystemExit(f"unknown engine {args.engine!r}")
        widget.engine_combo.setCurrentIndex(index)
    if args.device:
        widget.device_combo.setCurrentIndex(widget.device_combo.findData(args.device))
    if args.register:
        widget.run()
    return viewer, widget


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import napari

    setup_viewer(args)
    napari.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
