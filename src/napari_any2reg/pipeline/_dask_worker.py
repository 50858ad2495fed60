"""Per-worker set-up for cohort runs on Dask (imported on the workers, only when a batch runs)."""

from __future__ import annotations

import logging

from distributed.diagnostics.plugin import WorkerPlugin

log = logging.getLogger(__name__)


class TorchWorkerSetup(WorkerPlugin):
    """Pin torch's threads and load the network once per worker, before its first series.

    Parameters
    ----------
    threads : int
        Torch CPU threads per worker (each worker runs one series at a time).
    engine, device, weights :
        For the any2reg engines the network is loaded here; ``load_pretrained`` caches it, so
        every series the worker runs afterwards starts without reading the weights again.
    speak : str, optional
        The interface whose words the errors use (:mod:`..core.vocabulary`; ``None``: the
        worker's own, the Python API's). A worker process does not inherit the command line's,
        so the batch passes its own, as it does to each series (:func:`.batch.run_series`).
    """

    name = "napari-any2reg-torch-setup"
    idempotent = False  # a later batch with other settings replaces it (and re-runs setup)

    def __init__(self, threads: int, engine: str, device: str = "auto", weights: str | None = None,
                 speak: str | None = None):
        self.threads = int(threads)
        self.engine = engine
        self.device = device
        self.weights = weights
        self.speak = speak

    def setup(self, worker=None) -> None:
        if self.speak is None:
            return self._setup()
        from ..core.vocabulary import speaking

        with speaking(self.speak):
            return self._setup()

    def _setup(self) -> None:
        from .series import check_weights, set_torch_threads

        set_torch_threads(self.threads)
        if self.engine.startswith("any2reg"):
            try:
                check_weights(self.device, self.weights)
            except Exception as exc:  # each series reports it again, with the fix, in its row
                log.warning("worker could not load the network: %s", exc)
