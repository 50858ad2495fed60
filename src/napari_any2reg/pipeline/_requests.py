"""Helpers of the orchestrators: a request object or its fields as keywords, an output path checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def request_from(cls: type[T], request: T | None, keywords: Mapping[str, Any], defaults: Mapping[str, Any],
                 name: str = "request") -> T:
    """``request``, or a ``cls`` made from ``keywords`` (the function's keyword arguments).

    A caller passes either the request object or its fields as keywords (the older spelling,
    kept working); passing both would leave one of them silently unused, so it is an error.

    Raises
    ------
    TypeError
        ``request`` given together with keywords that differ from their defaults.
    """
    if request is None:
        return cls(**keywords)
    if not isinstance(request, cls):
        raise TypeError(f"{name} must be a {cls.__name__}; got {type(request).__name__}.")
    given = [key for key, value in keywords.items() if not _same(value, defaults[key])]
    if given:
        raise TypeError(f"pass either {name}= or {', '.join(given)}, not both: {name} holds "
                        f"{'them' if len(given) > 1 else 'it'} already.")
    return request


def _same(value: Any, default: Any) -> bool:
    if value is default:
        return True
    try:
        return bool(value == default)
    except (TypeError, ValueError):  # arrays and other values without one truth value
        return False


def output_path(value: Any, name: str) -> Path:
    """``value`` as a :class:`~pathlib.Path`; an empty or blank one is refused, naming the
    parameter (``Path('')`` is the current folder: outputs would land wherever Python runs)."""
    if value is None or not str(value).strip():
        raise ValueError(f"{name}= is empty ({value!r}); give the folder or file to write "
                         f"(e.g. {name}='results/series01').")
    return Path(value)
