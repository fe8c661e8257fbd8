"""Folders written atomically: fill a temporary sibling, then swap it into place with renames.

A reader sees the old folder or the new one, never a half-written one. The old folder is moved aside
(``.NAME.old-*``) until the new one is in place, and moved back if that rename fails; a process killed
between the two renames leaves the backup, which :func:`backups` finds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator


def backups(target: Path) -> list[Path]:
    """Folders an interrupted swap into ``target`` left aside, oldest first."""
    found = [p for p in target.parent.glob(f".{target.name}.old-*") if p.is_dir()]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def swap_into_place(tmp: Path, target: Path) -> None:
    """Replace ``target`` by the complete folder ``tmp``; the previous ``target`` is restored if that fails."""
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{os.getpid()}-{int(time.time() * 1000)}")
        os.replace(target, backup)
    try:
        os.replace(tmp, target)
    except BaseException:
        if backup is not None:
            os.replace(backup, target)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(target: Path, prefix: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; when the block succeeds it becomes ``target``.

    ``prefix`` names the temporary folder (default ``.NAME.tmp-``), so callers can recognise leftovers.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix or f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)
    with _swapped_in(tmp, target) as folder:
        yield folder


@contextlib.contextmanager
def _swapped_in(tmp: Path, target: Path) -> Iterator[Path]:
    """Yield ``tmp``; when the block succeeds it replaces ``target``. ``tmp`` is removed in any case."""
    try:
        yield tmp
        swap_into_place(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---- temporary folders owned by a live process ------------------------------------------------------

_LOCK_SUFFIX = ".lock"
_UNLOCKED_GRACE_S = 3600  # a folder without a lock file comes from a version without locks


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive lock on ``path``, or None when a live process holds it."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def owned_atomic_directory(target: Path, prefix: str) -> Iterator[Path]:
    """:func:`atomic_directory` whose temporary folder ``PREFIX<pid>-<random>`` is owned through a lock.

    The lock (``flock`` on the sibling ``<folder>.lock``) is taken before the folder exists and is
    released by the kernel when the process ends in any way (SIGKILL too), so
    :func:`remove_abandoned` can tell a folder of a live process (never touched) from a leftover
    (removed at once).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    name = f"{prefix}{os.getpid()}-{os.urandom(4).hex()}"
    lock = target.parent / (name + _LOCK_SUFFIX)
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        tmp = target.parent / name
        tmp.mkdir(mode=0o755)
        with _swapped_in(tmp, target) as folder:
            yield folder
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def leftover_directories(parent: Path, prefix: str) -> list[Path]:
    """Temporary folders ``PREFIX*`` in ``parent`` (of live owners or abandoned)."""
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.glob(prefix + "*") if p.is_dir())


def remove_abandoned(parent: Path, prefix: str) -> list[Path]:
    """Remove the temporary folders ``PREFIX*`` whose owner process is gone; returns what was removed.

    A folder whose lock a live process holds is never touched. One without a lock file (an older
    version's) is removed only after an hour; so is a lock file left without its folder.
    """
    removed = []
    now = time.time()
    for folder in leftover_directories(parent, prefix):
        lock = folder.with_name(folder.name + _LOCK_SUFFIX)
        if not lock.exists():
            if now - folder.stat().st_mtime > _UNLOCKED_GRACE_S:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
            continue
        fd = _try_lock(lock)
        if fd is None:
            continue
        try:
            shutil.rmtree(folder, ignore_errors=True)
            lock.unlink(missing_ok=True)
            removed.append(folder)
        finally:
            os.close(fd)
    for lock in parent.glob(prefix + "*" + _LOCK_SUFFIX) if parent.is_dir() else []:
        if not lock.with_name(lock.name[: -len(_LOCK_SUFFIX)]).exists() and now - lock.stat().st_mtime > _UNLOCKED_GRACE_S:
            fd = _try_lock(lock)
            if fd is not None:
                lock.unlink(missing_ok=True)
                os.close(fd)
    return removed
