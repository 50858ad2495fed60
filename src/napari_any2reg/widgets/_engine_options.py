"""The engine choice and its options, as a form section of the Registration dock.

:class:`EngineOptionsForm` lists the registered engines and shows the option controls the
selected engine understands; :meth:`EngineOptionsForm.options` returns them as keyword arguments
for :func:`napari_any2reg.core.registration.register`.
"""

from __future__ import annotations

import inspect
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QWidget

from ..core.registration import DEFAULT_ENGINE as CORE_DEFAULT_ENGINE
from ..core.registration import ENGINES, available_engines

__all__ = ["EngineOptionsForm", "engine_option_names", "DEFAULT_ENGINE", "METRICS", "DEFAULT_ITERATIONS_SCALE"]

#: Engine selected when the dock opens.
DEFAULT_ENGINE = CORE_DEFAULT_ENGINE

#: Similarity metrics offered for engines that take a ``metric`` option: (label, value).
METRICS = (("CTE (conditional template entropy)", "cte"), ("PCA2 (low-rank residual)", "pca2"))

#: Default of the speed/quality control (engine option ``iterations_scale``).
DEFAULT_ITERATIONS_SCALE = 1.0


def engine_option_names(engine: str) -> set[str]:
    """The keyword options an engine names explicitly in its signature."""
    available_engines()  # make sure the built-in engines are registered
    fn = ENGINES.get(engine)
    if fn is None:
        return set()
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins / C functions
        return set()
    return {name for name, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


class EngineOptionsForm(QWidget):
    """Engine combo box and the option controls of the selected engine.

    Attributes
    ----------
    engine_combo, metric_combo, iterations_spin : the controls
    load_error : the exception raised while listing the engines, or ``None``
    """

    #: The engine changed.
    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.engine_combo = QComboBox()
        try:
            engines = available_engines()
            self.load_error: BaseException | None = None
        except Exception as exc:  # an engine failing to import must not kill the dock
            engines, self.load_error = [], exc
        for name in engines:
            self.engine_combo.addItem(name, name)
        default = self.engine_combo.findData(DEFAULT_ENGINE)
        self.engine_combo.setCurrentIndex(default if default >= 0 else 0)
        self.engine_combo.currentIndexChanged.connect(self._on_engine_changed)
        form.addRow("Engine", self.engine_combo)

        self.metric_combo = QComboBox()
        for label, value in METRICS:
            self.metric_combo.addItem(label, value)
        self.metric_combo.setToolTip("CTE suits any contrast change (T1 mapping); PCA2 suits smooth relaxation series.")
        form.addRow("Metric", self.metric_combo)

        self.iterations_spin = QDoubleSpinBox()
        self.iterations_spin.setRange(0.05, 5.0)
        self.iterations_spin.setSingleStep(0.1)
        self.iterations_spin.setDecimals(2)
        self.iterations_spin.setValue(DEFAULT_ITERATIONS_SCALE)
        self.iterations_spin.setPrefix("× ")
        self.iterations_spin.setToolTip("Speed ↔ quality: scales the optimiser's iteration counts "
                                        "(0.2 quick preview, 1 default, 2 for hard cases).")
        form.addRow("Iterations", self.iterations_spin)
        self._running = False
        self._on_engine_changed()

    def engine(self) -> str:
        return str(self.engine_combo.currentData())

    def has_engines(self) -> bool:
        return self.engine_combo.count() > 0

    def _names(self) -> set[str]:
        return engine_option_names(self.engine()) if self.has_engines() else set()

    def options(self) -> dict[str, Any]:
        """Options for the selected engine from the controls it understands."""
        names = self._names()
        options: dict[str, Any] = {}
        if "metric" in names:
            options["metric"] = str(self.metric_combo.currentData())
        if "iterations_scale" in names:
            options["iterations_scale"] = float(self.iterations_spin.value())
        return options

    def set_running(self, running: bool) -> None:
        self._running = running
        self.engine_combo.setEnabled(not running)
        self._on_engine_changed()

    def _on_engine_changed(self, *args: Any) -> None:
        names = self._names()
        self.metric_combo.setEnabled("metric" in names and not self._running)
        self.iterations_spin.setEnabled("iterations_scale" in names and not self._running)
        self.changed.emit()
