"""Write the extra inputs of the guided tour's ECV and AHA-segments steps.

The plugin's samples hold one series each; ECV needs a post-contrast series of the same slice,
labels (1 LV blood pool, 2 LV myocardium, 3 RV blood pool) and the RV insertion points. This
script writes them for the MOLLI sample's phantom (same seed, size and field of view as
*File > Open Sample > Phantom MOLLI 5(3)3 with motion* and ``any2reg sample molli``)::

    .venv/bin/python docs/tour/tour_data.py -o tour-data/     # --size 192 (default)

* ``native.tif``: the MOLLI sample itself (native T1, 8 frames);
* ``post.tif``: the same anatomy after contrast (myocardium 450 ms, blood 300 ms), acquired
  in a breath-hold 12 mm lower than the native one, so the two maps do not overlap until they
  are registered as one set;
* ``labels.tif``: the phantom's labels on the native frames' mean position (2-D, uint8);
* ``rv_insertion.txt``: the anterior and inferior RV insertion points, ``"Y1,X1;Y2,X2"`` in
  pixels, as ``any2reg ecv / segments --rv-insertion`` takes them.

The true ECV of the phantom's myocardium at hematocrit 0.42 is 26.37 %.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: Landmark names of the phantom (and the Landmarks dock's defaults), anterior first.
RV_INSERTION = ("rv_insertion_anterior", "rv_insertion_inferior")


def tour_phantoms(size: int = 192):
    """``(native, post)`` phantoms: the MOLLI sample and its post-contrast partner (the napari
    sample *Phantom MOLLI native + post-contrast with heart labels (ECV)*)."""
    from napari_any2reg.widgets._sample_data import ecv_pair_phantoms

    return ecv_pair_phantoms((size, size))


def rv_insertion_text(phantom) -> str:
    """The RV insertion points of ``phantom`` as ``"Y1,X1;Y2,X2"`` (pixels, anterior first)."""
    return ";".join(",".join(f"{v:.1f}" for v in phantom.common_landmarks[name]) for name in RV_INSERTION)


def write_tour_data(folder: Path, size: int = 192) -> dict[str, Path]:
    """Write ``native.tif``, ``post.tif``, ``labels.tif`` and ``rv_insertion.txt`` into ``folder``."""
    import numpy as np
    import tifffile

    from napari_any2reg.io import write_tiff

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    native, post = tour_phantoms(size)
    paths = {name: folder / name for name in ("native.tif", "post.tif", "labels.tif", "rv_insertion.txt")}
    write_tiff(paths["native.tif"], native.sequence, overwrite=True)
    write_tiff(paths["post.tif"], post.sequence, overwrite=True)
    tifffile.imwrite(paths["labels.tif"], np.asarray(native.common_labels, np.uint8))
    paths["rv_insertion.txt"].write_text(rv_insertion_text(native) + "\n")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("tour-data"))
    parser.add_argument("--size", type=int, default=192, help="image size in pixels (default: 192, the sample's)")
    args = parser.parse_args(argv)
    paths = write_tour_data(args.output, args.size)
    for path in paths.values():
        print(f"wrote {path}")
    print(f"RV insertion (pixels, anterior first): {paths['rv_insertion.txt'].read_text().strip()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
