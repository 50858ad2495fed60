"""The engine choice and its options, as a form section of the Registration dock.

The option controls are built from :data:`napari_any2reg.core.engine_api.ENGINE_OPTIONS` (one
declaration for the CLI flags, validation and these controls): a check box for a ``bool``, a
combo box for an option with ``choices``, a spin box for a number (its range from the
registry), a line edit for a text. Only the options of the selected engine
(:func:`~napari_any2reg.core.engine_api.options_for`) are shown. ``reference_frame`` has its own
row in the dock (groupwise / fixed frame), so it is not repeated here.

:meth:`EngineOptionsForm.options` returns the values that differ from the engine's defaults, as
the CLI passes only the flags that were given.
"""

from __future__ import annotations

import math
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLineEdit, QSpinBox, QWidget

from ..core.engine_api import ENGINE_OPTIONS, EngineOption, options_for
from ..core.registration import DEFAULT_ENGINE as CORE_DEFAULT_ENGINE
from ..core.registration import available_engines

__all__ = ["EngineOptionsForm", "engine_option_names", "DEFAULT_ENGINE", "METRICS", "DEFAULT_ITERATIONS_SCALE",
           "OWN_ROWS"]

#: Engine selected when the dock opens.
DEFAULT_ENGINE = CORE_DEFAULT_ENGINE

#: Labels of the metric choices: (label, value).
METRICS = (("CTE (conditional template entropy)", "cte"), ("PCA2 (low-rank residual)", "pca2"))

#: Options with a row of their own in the Registration dock (not built here).
OWN_ROWS = ("reference_frame",)

#: Default of the speed/quality control (engine option ``iterations_scale``).
DEFAULT_ITERATIONS_SCALE = next(o.default for o in ENGINE_OPTIONS if o.name == "iterations_scale")

_CHOICE_LABELS = {"metric": dict((value, label) for label, value in METRICS)}


def engine_option_names(engine: str) -> set[str]:
    """The user-settable options of ``engine`` (from the registry)."""
    return {option.name for option in options_for(engine)}


def _decimals(option: EngineOption) -> int:
    low = option.minimum if option.minimum is not None else 0.0
    if 0 < low < 1e-3:
        return max(4, int(math.ceil(-math.log10(low))))
    return 3 if abs(float(option.default or 1.0)) < 0.1 else 2


def make_control(option: EngineOption) -> QWidget:
    """A control showing ``option.default``, with the registry's range and help as tooltip."""
    if option.choices is not None:
        control: QWidget = QComboBox()
        labels = _CHOICE_LABELS.get(option.name, {})
        for choice in option.choices:
            control.addItem(labels.get(choice, str(choice)), choice)
        control.setCurrentIndex(max(control.findData(option.default), 0))
    elif option.type is bool:
        control = QCheckBox()
        control.setChecked(bool(option.default))
    elif option.type is int:
        control = QSpinBox()
        control.setRange(int(option.minimum if option.minimum is not None else 0),
                         int(option.maximum if option.maximum is not None else 1_000_000))
        control.setValue(int(option.default or 0))
    elif option.type is float:
        control = QDoubleSpinBox()
        control.setDecimals(_decimals(option))
        control.setRange(float(option.minimum if option.minimum is not None else -1e6),
                         float(option.maximum if option.maximum is not None else 1e6))
        control.setValue(float(option.default or 0.0))
        control.setSingleStep(0.1 if control.maximum() <= 100 else 1.0)
        if option.default is None:
            # "unset" (the engine chooses, e.g. the scan's own grid) is the value one step
            # below the minimum, shown as text: a spin box has no empty state
            control.setRange(control.minimum() - control.singleStep(), control.maximum())
            control.setSpecialValueText("auto")
            control.setValue(control.minimum())
    else:
        control = QLineEdit()
        control.setPlaceholderText("default" if option.default is None else str(option.default))
        if option.default is not None:
            control.setText(str(option.default))
    control.setToolTip(f"{option.help} ({option.allowed()}).")
    return control


def control_value(option: EngineOption, control: QWidget) -> Any:
    """The control's value in the option's type (``None`` for an empty text)."""
    if isinstance(control, QComboBox):
        return control.currentData()
    if isinstance(control, QCheckBox):
        return control.isChecked()
    if isinstance(control, QSpinBox):
        return int(control.value())
    if isinstance(control, QDoubleSpinBox):
        if control.specialValueText() and control.value() == control.minimum():
            return None
        return float(control.value())
    text = control.text().strip()
    return text or None


class EngineOptionsForm(QWidget):
    """Engine combo box and the option controls of the selected engine (from ``ENGINE_OPTIONS``).

    Attributes
    ----------
    engine_combo : QComboBox
    controls : dict
        Option name -> control, for every option of every engine (hidden unless the selected
        engine takes it).
    metric_combo, iterations_spin : the ``metric`` and ``iterations_scale`` controls
    load_error : the exception raised while listing the engines, or ``None``
    """

    #: The engine changed.
    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._form = form = QFormLayout(self)
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

        self.options_by_name: dict[str, EngineOption] = {}
        self.controls: dict[str, QWidget] = {}
        for option in ENGINE_OPTIONS:
            if option.name in OWN_ROWS or option.name in self.controls:
                continue
            control = make_control(option)
            self.options_by_name[option.name] = option
            self.controls[option.name] = control
            form.addRow(option.label, control)
        self.metric_combo = self.controls["metric"]
        self.iterations_spin = self.controls["iterations_scale"]
        self._running = False
        self._on_engine_changed()

    def engine(self) -> str:
        return str(self.engine_combo.currentData())

    def has_engines(self) -> bool:
        return self.engine_combo.count() > 0

    def shown_options(self) -> list[str]:
        """Names of the options of the selected engine (the controls on show)."""
        if not self.has_engines():
            return []
        return [option.name for option in options_for(self.engine()) if option.name in self.controls]

    def options(self) -> dict[str, Any]:
        """The selected engine's options whose value differs from the default."""
        options: dict[str, Any] = {}
        for name in self.shown_options():
            option = self.options_by_name[name]
            value = control_value(option, self.controls[name])
            if value is None or value == option.default:
                continue
            options[name] = value
        return options

    def set_option(self, name: str, value: Any) -> None:
        """Set a control as the user would (``ValueError`` for an unknown option or value)."""
        control = self.controls.get(name)
        if control is None:
            raise ValueError(f"{name!r} is not an engine option.")
        if isinstance(control, QComboBox):
            index = control.findData(value)
            if index < 0:
                raise ValueError(f"{value!r} is not a choice of {name!r}.")
            control.setCurrentIndex(index)
        elif isinstance(control, QCheckBox):
            control.setChecked(bool(value))
        elif isinstance(control, (QSpinBox, QDoubleSpinBox)):
            control.setValue(control.minimum() if value is None else value)
        else:
            control.setText("" if value is None else str(value))

    def set_running(self, running: bool) -> None:
        self._running = running
        self.engine_combo.setEnabled(not running)
        self._on_engine_changed()

    def _on_engine_changed(self, *args: Any) -> None:
        shown = set(self.shown_options())
        for name, control in self.controls.items():
            self._form.setRowVisible(control, name in shown)
            control.setEnabled(name in shown and not self._running)
        self.changed.emit()
