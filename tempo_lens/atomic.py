"""Folders written atomically: fill a temporary sibling, then swap it into place with renames.

A reader sees the old folder or the new one, never a half-written one. The old folder is moved aside
(``.NAME.old-*``) until the new one is in place, and moved back if that rename fails; a process killed
between the two renames leaves the backup, which :func:`backups` finds.

Every temporary folder and backup carries its writer in its name (``MACHINE-PID-START``: a hash of
host name, boot and PID namespace, the process id and the process start time), and the writer holds a
``flock`` on the temporary folder while it fills it. A leftover is removed as soon as its writer is
gone, on the next write into the same target: on the same machine when that PID no longer runs the
process that started at START; on another machine when nobody holds the lock. A folder whose writer
may still run is never touched. Ctrl-C and SIGTERM inside :func:`atomic_directory` raise (see
:mod:`tempo_lens.signals`), so an interrupted or terminated write removes its own temporary folder.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import glob
import hashlib
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

from .signals import interrupts_raise

try:
    import fcntl
except ImportError:  # no flock here: another machine's folders are then never judged ended
    fcntl = None  # type: ignore[assignment]

LEGACY_STALE_S = 3600  # folders from versions that did not name their writer: removed after an hour
LOCK_GRACE_S = 60  # another machine's folder younger than this may not hold its lock yet


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot); None when no such process; 0 without /proc."""
    if not os.path.isdir("/proc/self"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return 0


@functools.lru_cache(maxsize=1)
def _machine() -> str:
    """One id per host, boot and PID namespace: where a PID means the same process."""
    parts = (socket.gethostname(), _read("/proc/sys/kernel/random/boot_id"), _pid_namespace())
    return hashlib.sha1("\0".join(parts).encode("utf-8", "replace")).hexdigest()[:8]


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def owner_tag() -> str:
    """``MACHINE-PID-START`` of this process, as written into temporary folder names."""
    pid = os.getpid()
    return f"{_machine()}-{pid}-{_start_ticks(pid) or 0}"


def _parse_owner(rest: str) -> tuple[str, int, int] | None:
    parts = rest.split("-")
    if len(parts) < 3 or len(parts[0]) != 8 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    try:
        int(parts[0], 16)
    except ValueError:
        return None
    return parts[0], int(parts[1]), int(parts[2])


def _try_lock(folder: Path) -> tuple[int | None, OSError | None]:
    """Open ``folder`` and try an exclusive, non-blocking flock: (descriptor or None, the flock's error or None).

    The descriptor is None where the folder cannot be opened or the platform has no ``flock``.
    """
    if fcntl is None:
        return None, None
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None, None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return fd, exc
    return fd, None


def _lock_is_free(folder: Path) -> bool | None:
    """Whether nobody holds the writer's lock on ``folder`` (None: this file system cannot tell)."""
    fd, error = _try_lock(folder)
    if fd is None:
        return None
    os.close(fd)
    if error is None:
        return True
    return False if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) else None


def writer_gone(folder: Path, prefix: str, legacy_stale_s: float = LEGACY_STALE_S) -> bool:
    """True only when the process that made ``folder`` (named ``PREFIX + MACHINE-PID-START-...``) has ended.

    A folder without a writer in its name (from an older version) counts as ended after ``legacy_stale_s``.
    """
    try:
        age = time.time() - folder.lstat().st_mtime
    except OSError:
        return False
    owner = _parse_owner(folder.name[len(prefix):])
    if owner is None:
        return age > legacy_stale_s
    machine, pid, start = owner
    if machine == _machine():
        now = _start_ticks(pid)
        return now is None or (start != 0 and now != 0 and now != start)
    return age > LOCK_GRACE_S and _lock_is_free(folder) is True


def temporaries(target: Path, prefix: str | None = None) -> list[Path]:
    """Temporary folders of writes into ``target`` (running now or left by killed writers)."""
    prefix = prefix or f".{target.name}.tmp-"
    if not target.parent.is_dir():
        return []
    return sorted(p for p in target.parent.glob(glob.escape(prefix) + "*") if p.is_dir() and not p.is_symlink())


def backups(target: Path) -> list[Path]:
    """Folders an interrupted swap into ``target`` left aside, oldest first."""
    if not target.parent.is_dir():
        return []
    found = [p for p in target.parent.glob(glob.escape(f".{target.name}.old-") + "*") if p.is_dir() and not p.is_symlink()]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def abandoned_backups(target: Path) -> list[Path]:
    """Backups whose writer has ended (an interrupted overwrite), oldest first; older versions' backups count."""
    return [p for p in backups(target) if writer_gone(p, f".{target.name}.old-", legacy_stale_s=0)]


def remove_abandoned(target: Path, prefix: str | None = None) -> list[Path]:
    """Delete the temporary folders (and, while ``target`` exists, the backups) whose writer has ended.

    Returns what was removed. Folders of live writers, on this machine or another, stay untouched.
    """
    prefix = prefix or f".{target.name}.tmp-"
    gone = [p for p in temporaries(target, prefix) if writer_gone(p, prefix)]
    if target.is_dir():
        gone += abandoned_backups(target)
    for folder in gone:
        shutil.rmtree(folder, ignore_errors=True)
    return gone


def swap_into_place(tmp: Path, target: Path) -> None:
    """Replace ``target`` by the complete folder ``tmp``; the previous ``target`` is restored if that fails."""
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{owner_tag()}-{int(time.time() * 1000)}")
        os.replace(target, backup)
    try:
        os.replace(tmp, target)
    except BaseException:
        if backup is not None:
            os.replace(backup, target)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _hold_lock(folder: Path) -> int | None:
    """Open ``folder`` and hold an exclusive flock on it (None where the file system has no locks)."""
    return _try_lock(folder)[0]


@contextlib.contextmanager
def atomic_directory(target: Path, prefix: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; when the block succeeds it becomes ``target``.

    ``prefix`` names the temporary folder (default ``.NAME.tmp-``), so callers can recognise leftovers;
    leftovers of ended writers are removed first. Ctrl-C or SIGTERM during the block removes the folder too.
    """
    prefix = prefix or f".{target.name}.tmp-"
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(target, prefix)
    with interrupts_raise():
        tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-", dir=target.parent))
        lock = _hold_lock(tmp)
        try:
            tmp.chmod(0o755)
            yield tmp
            swap_into_place(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            if lock is not None:
                os.close(lock)
