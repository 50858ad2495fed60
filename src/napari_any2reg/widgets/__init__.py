"""napari glue for napari-any2reg: reader, writers, sample data and the dock widgets.

Everything napari-specific lives in this sub-package; the computation is in
:mod:`napari_any2reg.core`, file handling in :mod:`napari_any2reg.io` and the application steps
(series, cohorts, export, apply) in :mod:`napari_any2reg.pipeline`. Sub-modules are imported
lazily by napari (through ``napari.yaml``), so this file imports nothing heavy.

Docks (``registration``, ``review``, ``mapping``, ``landmarks``, ``export``, ``apply``,
``batch``) are built on three shared pieces:

* :class:`._base.WorkerDock` runs their work in napari thread workers (progress, Cancel, status
  line, errors as notifications that never reach Qt);
* :class:`._pickers.LayerPicker` lists the layers an input accepts;
* :class:`._registered.RegisteredLayer` is the registered layer's metadata, typed (the only
  place its keys are written or read).
"""

__all__: list[str] = []
