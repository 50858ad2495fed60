"""Atomic file writing: write to a temporary file in the target folder, then rename.

A reader never sees a half-written file, a failed write leaves nothing behind, and an
existing file is only replaced when the caller says so.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_all"]


def _check_target(target: Path, overwrite: bool) -> None:
    if target.is_dir():
        raise IsADirectoryError(f"cannot write {target}: it is a folder; give a file name.")
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"{target} already exists; pass overwrite=True to replace it or choose another name."
        )
    parent = target.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: folder {parent} does not exist; create it first.")


def _reserve_temp(target: Path) -> Path:
    """Create an empty, hidden temporary file next to ``target`` and return its path.

    The temporary name ends with the full target name, so writers that pick the format
    from the extension (``.nii.gz``, ``.ome.tif``) or append one (``np.save``) behave.
    """
    for _ in range(100):
        temp = target.with_name(f".{secrets.token_hex(4)}~{target.name}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except PermissionError as exc:
            raise PermissionError(
                f"cannot write {target}: folder {target.parent} is not writable ({exc.strerror}); "
                "choose another folder or fix its permissions."
            ) from exc
        os.close(fd)
        return temp
    raise FileExistsError(f"cannot create a temporary file next to {target}.")  # pragma: no cover


def _commit(temp: Path, target: Path, overwrite: bool) -> None:
    """Move ``temp`` to ``target``; without ``overwrite`` never replace an existing file."""
    if overwrite:
        os.replace(temp, target)
        return
    try:
        os.link(temp, target)  # atomic "create if absent"
    except FileExistsError:
        raise FileExistsError(
            f"{target} already exists; pass overwrite=True to replace it or choose another name."
        ) from None
    except OSError:  # file system without hard links: check, then rename
        if target.exists():
            raise FileExistsError(
                f"{target} already exists; pass overwrite=True to replace it or choose another name."
            ) from None
        os.replace(temp, target)
        return
    temp.unlink()


def atomic_write_all(
    items: Iterable[tuple[Any, Callable[[Path], None]]], *, overwrite: bool = False
) -> list[Path]:
    """Write several files (e.g. an image and its JSON sidecar) as a unit.

    All targets are checked first, all temporary files are written, then they are renamed
    into place in order. If a check or a writer fails, no target is created or changed and
    no temporary file is left.

    Parameters
    ----------
    items : iterable of (path, writer)
        ``writer(temp_path)`` must write the complete file to ``temp_path``.
    overwrite : bool, optional
        Replace existing targets. Default: raise :class:`FileExistsError`.

    Returns
    -------
    list of Path
        The written paths, in the given order.
    """
    items = [(Path(path), writer) for path, writer in items]
    for target, _ in items:
        _check_target(target, overwrite)
    temps: list[Path] = []
    try:
        for target, writer in items:
            temp = _reserve_temp(target)
            temps.append(temp)
            writer(temp)
            if not temp.is_file():
                raise OSError(f"writing {target} failed: the writer did not create {temp.name}.")
        for temp, (target, _) in zip(temps, items):
            _commit(temp, target, overwrite)
    except BaseException:
        for temp in temps:
            try:
                temp.unlink()
            except OSError:
                pass
        raise
    return [target for target, _ in items]


def atomic_write(path: Any, writer: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Write a file atomically through ``writer``.

    ``writer`` is called with the path of a temporary file in the same folder as ``path``
    (its name ends with the target's name, so extension-sensitive writers work); on
    success the temporary file is renamed to ``path`` with :func:`os.replace`.

    Parameters
    ----------
    path : str or Path
        Target file.
    writer : callable
        ``writer(temp_path)`` writes the whole file to ``temp_path``.
    overwrite : bool, optional
        Replace ``path`` if it exists. Default ``False``: raise :class:`FileExistsError`.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    FileNotFoundError
        If the folder of ``path`` does not exist.
    PermissionError
        If the folder is not writable.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write(folder / "u.npy", lambda p: np.save(p, np.zeros(3))).name
    'u.npy'
    """
    return atomic_write_all([(path, writer)], overwrite=overwrite)[0]
