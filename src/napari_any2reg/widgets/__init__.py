"""napari glue for napari-any2reg: reader, writers, sample data and the Registration widget.

Everything napari-specific lives in this sub-package; the computation is in
:mod:`napari_any2reg.core` and file handling in :mod:`napari_any2reg.io`. Sub-modules are
imported lazily by napari (through ``napari.yaml``), so this file imports nothing heavy.
"""

__all__: list[str] = []
