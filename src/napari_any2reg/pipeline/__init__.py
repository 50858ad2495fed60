"""Application layer: what a user asks for, above :mod:`..core` (compute) and :mod:`..io` (files).

The command line and the napari widgets both call this layer, so a registration run from the
``any2reg register`` command, from ``any2reg batch`` or from a napari Batch entry goes through
the same code and writes the same files.

=====================  =====================================================================
``series``             one sequence: read, check the outputs, register, fit, export
                       (:func:`~.series.register_series`, used by ``any2reg register``)
``preflight``          what a run checks before it computes: inputs, export items, output
                       files, disk space, weights (:func:`~.preflight.resolve_export_items`)
``export``             the export folder (:func:`~.export.export_registration`), run from one
                       table of items (:mod:`~.export_table`: planning, availability, writing)
``fit``                T1 / T2 / T2* maps of one sequence file, frames to leave out, ROI and
                       segment statistics (:func:`~.fit.fit_series`, used by ``any2reg fit``)
``tre``, ``sample``    landmark TRE of a saved field (:func:`~.tre.tre_file`); the phantoms
                       as files (:func:`~.sample.write_sample`)
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
