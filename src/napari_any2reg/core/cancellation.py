"""The one cancellation exception of the package, in a module that imports nothing.

:class:`Cancelled` is raised when the user cancels a long computation: a registration
(:class:`.engine_api.Progress`), a T1 fit (``FitCancelled``, a subclass), training, or a dock's
job (``widgets._base.JobCancelled``, a subclass). Callers recognise cancellation with
``isinstance(error, Cancelled)``, never by a class name.

It lives apart from :mod:`.engine_api` (which re-exports it) because that module imports torch:
a dock that never registers (Export) still catches cancellation without paying for torch.
"""

from __future__ import annotations

__all__ = ["Cancelled"]


class Cancelled(RuntimeError):
    """The user cancelled a long computation (registration, training, T1 fit, a dock's job)."""
