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

__all__ = ["atomic_write", "atomic_write_all", "atomic_write_folder"]


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


def _move_exclusive(source: Path, target: Path) -> None:
    """Move ``source`` to ``target`` without ever replacing an existing ``target``."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise FileExistsError(
            f"{target} already exists; pass overwrite=True to replace it or choose another folder."
        ) from None
    except OSError:  # no hard links on this file system: check, then rename
        if target.exists():
            raise FileExistsError(
                f"{target} already exists; pass overwrite=True to replace it or choose another folder."
            ) from None
        os.replace(source, target)
        return
    source.unlink()


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` (and missing parents); return the folders created, deepest first."""
    created: list[Path] = []
    probe = folder
    while not probe.exists():
        created.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise NotADirectoryError(
            f"cannot write into {folder}: {probe} is a file, not a folder; choose another output folder."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise type(exc)(
            f"cannot create the output folder {folder} ({exc.strerror or exc}); choose another folder "
            "or fix its permissions."
        ) from exc
    return created


def atomic_write_folder(
    folder: Any,
    writer: Callable[[Path], None],
    *,
    expected: Iterable[str] = (),
    overwrite: bool = False,
) -> list[Path]:
    """Write a set of files into ``folder`` as one unit: all of them appear, or none.

    ``writer(staging)`` writes every file into a hidden staging folder inside ``folder`` (same
    file system, so the final moves are renames). Then each file is moved into ``folder``.
    If the writer or a move fails, the files already moved are removed again, files replaced
    under ``overwrite`` are restored, the staging folder is deleted and folders this call
    created are removed: a failed export leaves nothing behind.

    Parameters
    ----------
    folder : str or Path
        Output folder; created (with parents) when missing.
    writer : callable
        ``writer(staging_path)`` writes plain files (no sub-folders) into ``staging_path``.
    expected : iterable of str, optional
        File names the writer will produce, checked before it runs so a clash is reported
        before any work is done (the actual names are checked again before moving).
    overwrite : bool, optional
        Replace existing files of the same names. Default: raise :class:`FileExistsError`.

    Returns
    -------
    list of Path
        The written files, sorted by name.
    """
    import shutil

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"cannot write into {folder}: it is a file, not a folder; choose another output folder.")

    def clashes(names: Iterable[str]) -> list[str]:
        return [str(folder / name) for name in names if (folder / name).exists()]

    existing = clashes(expected) if folder.is_dir() else []
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist; pass overwrite=True to replace them or choose another folder.")
    created = _make_folder(folder)
    staging = folder / f".any2reg-staging-{secrets.token_hex(4)}"
    backup = staging / ".replaced"
    moved: list[Path] = []
    replaced: list[tuple[Path, Path]] = []
    try:
        try:
            staging.mkdir()
        except PermissionError as exc:
            raise PermissionError(
                f"cannot write into {folder}: the folder is not writable ({exc.strerror}); choose another "
                "folder or fix its permissions."
            ) from exc
        writer(staging)
        entries = sorted(p for p in staging.iterdir() if p.name != backup.name)
        nested = [p.name for p in entries if not p.is_file()]
        if nested:
            raise OSError(f"atomic_write_folder writes plain files only; the writer made {', '.join(nested)}.")
        existing = clashes(p.name for p in entries)
        if existing and not overwrite:
            raise FileExistsError(f"{', '.join(existing)} already exist; pass overwrite=True to replace them or choose another folder.")
        backup.mkdir()
        for entry in entries:
            target = folder / entry.name
            if overwrite and target.exists():
                if target.is_dir():
                    raise IsADirectoryError(f"cannot write {target}: it is a folder.")
                kept = backup / entry.name
                os.replace(target, kept)
                replaced.append((kept, target))
                os.replace(entry, target)
            else:
                _move_exclusive(entry, target)
            moved.append(target)
    except BaseException:
        for target in moved:
            try:
                target.unlink()
            except OSError:
                pass
        for kept, target in replaced:
            try:
                os.replace(kept, target)
            except OSError:
                pass
        shutil.rmtree(staging, ignore_errors=True)
        for path in created:  # deepest first; only if still empty
            try:
                path.rmdir()
            except OSError:
                break
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return sorted(moved)
