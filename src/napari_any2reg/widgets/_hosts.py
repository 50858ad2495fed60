"""What a dock section may ask of the dock that builds it: small :class:`typing.Protocol` types.

A *section* is a part of a dock kept in a module of its own (the Landmarks dock's name list and
registration tools, the Mapping dock's ECV and AHA-segments boxes). It receives its dock in its
constructor as a *host* typed with one of these protocols (or a protocol of its own module that
extends them) and uses only what the protocol declares, never the dock's private attributes.
This is the pattern of napari-animation, whose Qt widgets get the model passed down: a section
can be read, tested and replaced without knowing the rest of its dock, and a dock may change
its internals without breaking its sections. ``tests/test_architecture.py`` checks that every
``self.host.<name>`` in a section is declared by the section's host protocol.

Every :class:`~._base.WorkerDock` satisfies :class:`StatusHost` and :class:`JobHost`; a dock
building a section with a wider protocol implements the extra members (public methods).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

__all__ = ["StatusHost", "JobHost"]


@runtime_checkable
class StatusHost(Protocol):
    """The dock's status line and notifications."""

    def set_status(self, text: str) -> None:
        """Show ``text`` in the dock's status line."""

    def report_error(self, message: str, exc: BaseException | None = None) -> None:
        """Show ``message`` in the status line and as a napari error notification."""

    def report_info(self, message: str) -> None:
        """A napari info notification."""


@runtime_checkable
class JobHost(StatusHost, Protocol):
    """A :class:`StatusHost` with the viewer and the dock's jobs (:meth:`~._base.WorkerDock.start_job`)."""

    #: The napari viewer (the public proxy napari hands a plugin dock).
    viewer: Any

    def start_job(self, fn: Callable[[Any], Any], **options: Any) -> bool:
        """Run ``fn(job)`` in a worker with the dock's progress, Cancel and error reporting."""

    def is_running(self) -> bool:
        """Whether the dock's main job runs (a section disables its inputs meanwhile)."""

    def run_in_turns(self, steps: list[Callable[[], Any]], error_prefix: str = ...) -> None:
        """Run ``steps`` on the GUI thread one per event-loop turn (a layer each), errors reported."""
