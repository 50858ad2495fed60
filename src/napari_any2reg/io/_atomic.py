"""Atomic file writing: write to a temporary file in the target folder, then rename.

A reader never sees a half-written file, a failed write leaves nothing behind, and an
existing file is only replaced when the caller says so.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..core.vocabulary import arg

__all__ = ["atomic_write", "atomic_write_all", "atomic_write_folder", "check_output_folder"]

# errno values that mean "the medium cannot take more data": reported as a full disk
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


def _explained(exc: BaseException, target: Path) -> BaseException:
    """``exc`` with a message that names the problem and the fix, for the common OS failures.

    A bare ``[Errno 28] No space left on device`` from deep inside a TIFF writer does not say
    which file or what to do; the re-raised error does (same errno, so callers can still test it).
    """
    if not isinstance(exc, OSError) or exc.errno is None:
        return exc
    if exc.errno in _FULL:
        return OSError(
            exc.errno,
            f"cannot write {target}: the disk is full or over quota ({exc.strerror}); nothing was "
            "written. Free some space or choose an output folder on another disk.",
        )
    if exc.errno in (errno.EACCES, errno.EPERM) and not str(exc.strerror or "").startswith("cannot "):
        where = exc.filename if exc.filename else target
        return PermissionError(
            exc.errno,
            f"cannot write {where}: permission denied ({exc.strerror}); nothing was written. Choose "
            "another output folder or fix its permissions.",
        )
    if exc.errno == errno.EROFS:
        return OSError(
            exc.errno,
            f"cannot write {target}: the file system is read-only; nothing was written. Choose "
            "another output folder.",
        )
    return exc


def _nearest_existing(folder: Path) -> Path:
    """The deepest existing path on the way up from ``folder`` (``folder`` itself if it exists)."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


def check_output_folder(folder: Any, *, needed_bytes: int = 0) -> Path:
    """Check, before any work is done, that ``folder`` can receive the outputs.

    Nothing is created: a missing folder is checked through its nearest existing parent (the
    writers create it later, and remove it again if writing fails).

    Parameters
    ----------
    folder : str or Path
        The output folder (existing or to be created).
    needed_bytes : int, optional
        Expected size of the outputs; refused when the disk has less free space.

    Returns
    -------
    Path
        ``Path(folder)``.

    Raises
    ------
    NotADirectoryError
        ``folder``, or a path on the way to it, is a file.
    PermissionError
        The folder (or the parent it would be created in) is not writable.
    OSError
        The disk is full, has less than ``needed_bytes`` free, or is read-only.
    """
    import tempfile

    folder = Path(folder)
    base = _nearest_existing(folder)
    if not base.is_dir():
        where = "it is" if base == folder else f"{base} is"
        raise NotADirectoryError(
            f"cannot write into {folder}: {where} a file, not a folder; choose another output folder."
        )
    # a real probe file: os.access() is wrong for root, ACLs, read-only mounts and full disks
    try:
        fd, probe = tempfile.mkstemp(prefix=".any2reg-probe-", dir=base)
    except PermissionError as exc:
        raise PermissionError(
            exc.errno,
            f"cannot write into {folder}: {base} is not writable ({exc.strerror}); choose another "
            "folder or fix its permissions.",
        ) from exc
    except OSError as exc:
        raise _explained(exc, folder) from exc
    os.close(fd)
    os.unlink(probe)
    if needed_bytes > 0:
        free = shutil.disk_usage(base).free
        if free < needed_bytes:
            raise OSError(
                errno.ENOSPC,
                f"cannot write into {folder}: the outputs need about {_megabytes(needed_bytes)} but only "
                f"{_megabytes(free)} are free on that disk. Free some space or choose an output folder "
                "on another disk.",
            )
    return folder


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count < 1e9 else f"{count / 1e9:.2f} GB"


def _check_target(target: Path, overwrite: bool) -> None:
    if target.is_dir():
        raise IsADirectoryError(f"cannot write {target}: it is a folder; give a file name.")
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"{target} already exists; pass {arg('overwrite', True)} to replace it or choose another name."
        )
    parent = target.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: folder {parent} does not exist; create it first.")


def _reserve_temp(target: Path) -> Path:
    """Create an empty, hidden temporary file next to ``target`` and return its path.

    The temporary name ends with the full target name, so writers that pick the format
    from the extension (``.nii.gz``, ``.ome.tif``) or append one (``np.save``) behave; it
    starts with the writing process (``.<host tag>-<pid>-<random>~``), so a temporary left by a
    process killed with SIGKILL is removed by the next write into the folder.
    """
    owner = f"{_host_tag()}-{os.getpid()}"  # a killed writer's leftover is recognised (remove_stale_temporaries)
    for _ in range(100):
        temp = target.with_name(f".{owner}-{secrets.token_hex(4)}~{target.name}")
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
    raise FileExistsError(f"cannot create a temporary file next to {target}: 100 random names were all taken; "
                          "remove the hidden .*~ files left in that folder.")


def _commit(temp: Path, target: Path, overwrite: bool) -> None:
    """Move ``temp`` to ``target``; without ``overwrite`` never replace an existing file."""
    if overwrite:
        os.replace(temp, target)
        return
    try:
        os.link(temp, target)  # atomic "create if absent"
    except FileExistsError:
        raise FileExistsError(
            f"{target} already exists; pass {arg('overwrite', True)} to replace it or choose another name."
        ) from None
    except OSError:  # file system without hard links: check, then rename
        if target.exists():
            raise FileExistsError(
                f"{target} already exists; pass {arg('overwrite', True)} to replace it or choose another name."
            ) from None
        os.replace(temp, target)
        return
    temp.unlink()


def _set_aside(target: Path) -> Path:
    """Keep the file about to be replaced under a hidden name, so a failed unit can restore it.

    A hard link keeps ``target`` in place until the atomic replace (readers never see it missing);
    without hard links the file is renamed aside.
    """
    for _ in range(100):
        aside = target.with_name(f".{secrets.token_hex(4)}~replaced~{target.name}")
        try:
            os.link(target, aside)
            return aside
        except FileExistsError:
            continue
        except OSError:
            if aside.exists():
                continue
            os.replace(target, aside)
            return aside
    raise FileExistsError(f"cannot set {target} aside before replacing it: 100 random names were all taken; "
                          "remove the hidden .*~replaced~ files left in that folder.")


def atomic_write_all(
    items: Iterable[tuple[Any, Callable[[Path], None]]], *, overwrite: bool = False
) -> list[Path]:
    """Write several files (e.g. an image and its JSON sidecar) as a unit: all of them, or none.

    All targets are checked first, all temporary files are written, then they are renamed
    into place. If a check, a writer or a rename fails (or the process is interrupted by an
    exception such as ``KeyboardInterrupt``), the targets already renamed are removed, the
    files they replaced are restored, and no temporary file is left.

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
    for parent in dict.fromkeys(target.parent for target, _ in items):
        remove_stale_temporaries(parent)
    temps: list[Path] = []
    committed: list[Path] = []
    kept: list[tuple[Path, Path]] = []  # (replaced file set aside, its target)
    current = items[0][0] if items else Path(".")
    try:
        for target, writer in items:
            current = target
            temps.append(_reserve_temp(target))
            writer(temps[-1])
            if not temps[-1].is_file():
                raise OSError(f"writing {target} failed: the writer did not create {temps[-1].name}.")
        for temp, (target, _) in zip(temps, items):
            current = target
            if overwrite and target.exists():
                kept.append((_set_aside(target), target))
            _commit(temp, target, overwrite)
            committed.append(target)
    except BaseException as exc:
        for target in committed:
            try:
                target.unlink()
            except OSError:
                pass
        for aside, target in kept:
            try:
                os.replace(aside, target)
            except OSError:
                pass
        for temp in temps:
            try:
                temp.unlink()
            except OSError:
                pass
        explained = _explained(exc, current)
        if explained is not exc:
            raise explained from exc
        raise
    for aside, _ in kept:
        try:
            aside.unlink()
        except OSError:
            pass
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
            f"{target} already exists; pass {arg('overwrite', True)} to replace it or choose another folder."
        ) from None
    except OSError:  # no hard links on this file system: check, then rename
        if target.exists():
            raise FileExistsError(
                f"{target} already exists; pass {arg('overwrite', True)} to replace it or choose another folder."
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


STAGING_PREFIX = ".any2reg-staging-"
#: ``.any2reg-staging-<host tag>-<pid>-<random>``: the writing process, checkable on its host.
_STAGING_NAME = re.compile(re.escape(STAGING_PREFIX) + r"([0-9a-f]{8})-(\d+)-[0-9a-f]+$")
#: A staging folder that names no owner (written before owners were named) is stale after this.
_UNOWNED_STAGING_S = 3600.0


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # alive under another user (or a number we cannot check): keep its folder
    return True


def _staging_is_stale(staging: Path) -> bool:
    """Whether ``staging`` was left by a run that is gone (killed with SIGKILL, power loss)."""
    match = _STAGING_NAME.match(staging.name)
    if match is None:
        try:
            return time.time() - staging.stat().st_mtime > _UNOWNED_STAGING_S
        except OSError:
            return False
    if match.group(1) != _host_tag():
        return False  # another machine's run on a shared disk: its process cannot be checked
    return not _process_alive(int(match.group(2)))


def remove_stale_staging(folder: Any) -> list[Path]:
    """Remove the staging folders in ``folder`` whose writing process is gone; return them.

    A run killed while committing may have set originals aside (``overwrite``) in its
    ``.replaced`` folder: they are put back first, so the folder holds what it held before.
    """
    folder = Path(folder)
    removed = []
    try:
        candidates = [p for p in folder.iterdir() if p.name.startswith(STAGING_PREFIX) and p.is_dir()]
    except OSError:
        return removed
    for staging in candidates:
        if not _staging_is_stale(staging):
            continue
        kept = staging / ".replaced"
        if kept.is_dir():
            for original in kept.iterdir():
                try:
                    os.replace(original, folder / original.name)
                except OSError:
                    pass
        shutil.rmtree(staging, ignore_errors=True)
        if not staging.exists():
            removed.append(staging)
    return removed


#: ``.<host tag>-<pid>-<random>~<target name>``: the temporary of one file, its writer in the name.
_TEMP_NAME = re.compile(r"\.([0-9a-f]{8})-(\d+)-[0-9a-f]{8}~.")


def remove_stale_temporaries(folder: Any) -> list[Path]:
    """Remove the single-file temporaries in ``folder`` whose writing process is gone; return them.

    Only files named by :func:`_reserve_temp` that were written on this host by a process that
    no longer exists: the writer removes its own on any exception, so only a killed process
    (SIGKILL, power loss) leaves one. A temporary of a live process (this one included), of
    another host (a shared disk: its process cannot be checked) or of unknown origin is kept.
    """
    folder = Path(folder)
    removed: list[Path] = []
    host = _host_tag()
    try:
        entries = [entry for entry in os.scandir(folder) if entry.name.startswith(".")]
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or match.group(1) != host:
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or _process_alive(int(match.group(2))):
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


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
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"cannot write into {folder}: it is a file, not a folder; choose another output folder.")

    def clashes(names: Iterable[str]) -> list[str]:
        return [str(folder / name) for name in names if (folder / name).exists()]

    existing = clashes(expected) if folder.is_dir() else []
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist; pass {arg('overwrite', True)} to replace them or choose another folder.")
    created = _make_folder(folder)
    remove_stale_staging(folder)
    staging = folder / f"{STAGING_PREFIX}{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"  # owner in the name
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
            raise FileExistsError(f"{', '.join(existing)} already exist; pass {arg('overwrite', True)} to replace them or choose another folder.")
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
    except BaseException as exc:
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
        explained = _explained(exc, folder)
        if explained is not exc:
            raise explained from exc
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return sorted(moved)
