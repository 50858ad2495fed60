"""napari-any2reg: groupwise motion correction for quantitative cardiac MRI.

Quick start::

    from napari_any2reg import register, make_phantom
    phantom = make_phantom("molli", seed=1)
    result = register(phantom.sequence, engine="groupwise")
    result.registered.shape, result.displacement.shape   # (N, H, W), (N, 2, H, W)
"""

from ._version import __version__

__all__ = ["__version__", "Sequence", "register", "RegistrationResult", "make_phantom", "read_sequence"]

# Heavy imports (torch) are deferred so that napari can read the plugin manifest quickly.
_LAZY = {
    "Sequence": ("napari_any2reg.core.sequence", "Sequence"),
    "register": ("napari_any2reg.core.registration", "register"),
    "RegistrationResult": ("napari_any2reg.core.registration", "RegistrationResult"),
    "make_phantom": ("napari_any2reg.core.phantom", "make_phantom"),
    "read_sequence": ("napari_any2reg.io", "read_sequence"),
}


def _model_files():
    from .io.model_io import ModelFiles

    return ModelFiles()


def _install_weights_source() -> None:
    # the composition root: core reads no file, so the any2reg engines get their weights from
    # the io layer's model files (built on first use: importing the package stays light)
    from .core.weights import install_weights_source

    install_weights_source(_model_files)


_install_weights_source()


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'napari_any2reg' has no attribute {name!r}")
