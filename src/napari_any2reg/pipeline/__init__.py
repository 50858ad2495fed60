"""Application layer: what a user asks for, above :mod:`..core` (compute) and :mod:`..io` (files).

The command line and the napari widgets both call this layer, so a registration run from the
``any2reg register`` command, from ``any2reg batch`` or from a napari Batch entry goes through
the same code and writes the same files.

=====================  =====================================================================
``series``             one sequence: read, check the outputs, register, fit, export
                       (:func:`~.series.register_series`, used by ``any2reg register``)
``export``             the export folder: one table of items (:data:`~.export.ITEMS`) drives
                       planning, availability and writing (:func:`~.export.export_registration`)
``training``           training runs on files: reads the data, writes checkpoints atomically
                       (:func:`~.training.train`), ships weights (:func:`~.training.export_weights`)
``cohort``             find the series of a study (files, DICOM trees, a CSV list) and give
                       each a stable output folder name (:func:`~.cohort.discover`)
``batch``              run a cohort on Dask (local cluster or a scheduler address), skip
                       finished series, retry failed ones (:func:`~.batch.run_batch`)
``summary``            ``summary.csv`` and the cohort QC page (:func:`~.summary.write_summary`)
=====================  =====================================================================

Nothing here imports torch, Dask or matplotlib at import time: the CLI stays fast to start.
"""
