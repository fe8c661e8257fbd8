"""Folders written atomically: fill a temporary sibling, then swap it into place with renames.

A reader sees the old folder or the new one, never a half-written one. The old folder is moved aside
(``.NAME.old-*``) until the new one is in place, and moved back if that rename fails; a process killed
between the two renames leaves the backup, which :func:`backups` finds.

Ownership is proved twice: every temporary folder and backup carries its writer in its name
(``MACHINE-PID-START``: a hash of host name, boot and PID namespace, the process id and the process
start time) *and* holds a marker file (:data:`MARKER`) whose text is that exact name. Only such folders
are ever removed or restored; a user's ``.exp.old-june`` or ``.exp.tmp-keep`` (no marker, or a marker
naming another folder, as a copy has) is left alone. The writer holds a ``flock`` on its temporary
folder while it fills it. A leftover is removed as soon as its writer is gone, on the next write into
the same target: on the same machine when that PID no longer runs the process that started at START;
on another machine when nobody holds the lock. A folder whose writer may still run is never touched.

Writers of one folder exclude each other: :func:`folder_lock` holds a ``flock`` on the folder a write
goes into for the whole write (reentrant within a process). Temporary files are only ever created
inside a fresh temporary folder of ours, with ``O_EXCL | O_NOFOLLOW`` (:func:`write_files`), so a
planted link is never opened. Ctrl-C and SIGTERM inside :func:`atomic_directory` raise (see
:mod:`tempo_lens.io.signals`), so an interrupted or terminated write removes its own temporary folder.
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
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import ExperimentFileError
from .lock_holder import describe_holder
from .signals import interrupts_raise

try:
    import fcntl
except ImportError:  # no flock here: another machine's folders are then never judged ended
    fcntl = None  # type: ignore[assignment]

LOCK_GRACE_S = 60  # another machine's folder younger than this may not hold its lock yet
LOCK_WAIT_S = 600.0  # how long a writer waits for another writer of the same folder before refusing
MARKER = ".tempo-lens-owner"  # inside each temporary folder and backup: the name this program gave it
FILES_PREFIX = ".tempo-lens-files.tmp-"  # temporary folders of write_files
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


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


def _write_marker(folder: Path, name: str, exclusive: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | _NOFOLLOW | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(folder / MARKER, flags, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(name)


def is_ours(folder: Path) -> bool:
    """Whether ``folder`` is a real folder holding a marker that names it: made by this program under this name."""
    try:
        if folder.is_symlink() or not folder.is_dir():
            return False
        fd = os.open(folder / MARKER, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))  # a FIFO never blocks
    except OSError:
        return False
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return False
        return handle.read(512).decode("utf-8", "replace") == folder.name


def writer_gone(folder: Path, prefix: str) -> bool:
    """True only when the process that made ``folder`` (named ``PREFIX + MACHINE-PID-START-...``) has ended.

    A folder whose name carries no writer is never judged ended: this program always names its writer.
    """
    try:
        age = time.time() - folder.lstat().st_mtime
    except OSError:
        return False
    owner = _parse_owner(folder.name[len(prefix) :])
    if owner is None:
        return False
    machine, pid, start = owner
    if machine == _machine():
        now = _start_ticks(pid)
        return now is None or (start != 0 and now != 0 and now != start)
    return age > LOCK_GRACE_S and _lock_is_free(folder) is True


def _ours_matching(parent: Path, prefix: str) -> list[Path]:
    if not parent.is_dir():
        return []
    return [p for p in parent.glob(glob.escape(prefix) + "*") if is_ours(p)]


def temporaries(target: Path, prefix: str | None = None) -> list[Path]:
    """Temporary folders of writes into ``target`` (running now or left by killed writers); ours only."""
    return sorted(_ours_matching(target.parent, prefix or f".{target.name}.tmp-"))


def backups(target: Path) -> list[Path]:
    """Folders an interrupted swap into ``target`` left aside (ours only), oldest first."""
    return sorted(_ours_matching(target.parent, f".{target.name}.old-"), key=lambda p: p.stat().st_mtime)


def abandoned_backups(target: Path) -> list[Path]:
    """Backups whose writer has ended (an interrupted overwrite), oldest first."""
    return [p for p in backups(target) if writer_gone(p, f".{target.name}.old-")]


def remove_abandoned(target: Path, prefix: str | None = None) -> list[Path]:
    """Delete the temporary folders (and, while ``target`` exists, the backups) whose writer has ended.

    Returns what was removed. Folders of live writers, and anything this program did not make, stay untouched.
    """
    prefix = prefix or f".{target.name}.tmp-"
    gone = [p for p in temporaries(target, prefix) if writer_gone(p, prefix)]
    if target.is_dir():
        gone += abandoned_backups(target)
    for folder in gone:
        shutil.rmtree(folder, ignore_errors=True)
    return gone


def restore_backup(backup: Path, target: Path) -> None:
    """Rename one of our backups back to ``target`` and drop its ownership marker."""
    os.replace(backup, target)
    (target / MARKER).unlink(missing_ok=True)


def swap_into_place(tmp: Path, target: Path) -> None:
    """Replace ``target`` by the complete folder ``tmp``; the previous ``target`` is restored if that fails."""
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{owner_tag()}-{int(time.time() * 1000)}")
        _write_marker(target, backup.name, exclusive=False)  # the backup is provably ours
        try:
            os.replace(target, backup)
        except BaseException:
            (target / MARKER).unlink(missing_ok=True)
            raise
    try:
        (tmp / MARKER).unlink(missing_ok=True)  # the new folder carries no marker once it is in place
        os.replace(tmp, target)
    except BaseException:
        if backup is not None:
            restore_backup(backup, target)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _hold_lock(folder: Path) -> int | None:
    """Open ``folder`` and hold an exclusive flock on it (None where the file system has no locks)."""
    return _try_lock(folder)[0]


_HELD: dict[str, list[int]] = {}  # folder (real path) -> [descriptor, depth]: folder_lock is reentrant


@contextlib.contextmanager
def folder_lock(folder: Path, wait_s: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if missing) while writing into it.

    Writers of one folder (``run``, ``merge``, ``analyze``, ``result.save``) exclude each other: a
    second writer waits up to ``wait_s`` (default :data:`LOCK_WAIT_S`) and is then refused, naming the
    folder. Reentrant within one process; a no-op where the platform has no ``flock``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    limit = LOCK_WAIT_S if wait_s is None else wait_s
    deadline = time.monotonic() + limit
    announced = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    break  # this file system has no locks: go on unlocked, as without flock

                if time.monotonic() >= deadline:
                    raise ExperimentFileError(
                        f"{describe_holder(folder)} is writing into {folder} (it holds the folder's lock) and did not "
                        f"finish within {limit:.3g} s; wait for it to finish, or write somewhere else"
                    ) from None
                if not announced and limit >= 1:  # a person waiting is told what for, and for how long
                    announced = True
                    span = f"{limit:.0f} s" if limit < 120 else f"{limit / 60:.0f} min"
                    print(
                        f"[tempo_lens] waiting for {describe_holder(folder)}, which is writing into {folder} (it holds "
                        f"the folder's lock); waiting up to {span}, then giving up",
                        file=sys.stderr,
                        flush=True,
                    )
                time.sleep(0.05)
        _HELD[key] = [fd, 1]
        try:
            yield
        finally:
            del _HELD[key]
    finally:
        os.close(fd)


@contextlib.contextmanager
def owned_temporary(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh, marked and locked temporary folder ``PARENT/PREFIX+MACHINE-PID-START-xxxxxxxx``, removed on exit."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-", dir=parent))
    lock = _hold_lock(tmp)
    try:
        _write_marker(tmp, tmp.name, exclusive=True)
        yield tmp
    finally:
        if tmp.exists() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        if lock is not None:
            os.close(lock)


@contextlib.contextmanager
def atomic_directory(target: Path, prefix: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; when the block succeeds it becomes ``target``.

    ``prefix`` names the temporary folder (default ``.NAME.tmp-``), so callers can recognise leftovers;
    leftovers of ended writers are removed first. Ctrl-C or SIGTERM during the block removes the folder too.
    The folder holds the ownership marker while it is filled (leave it there); it is removed just before the swap.
    """
    prefix = prefix or f".{target.name}.tmp-"
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(target, prefix)
    with interrupts_raise(), owned_temporary(target.parent, prefix) as tmp:
        tmp.chmod(0o755)
        try:
            yield tmp
        except OSError as exc:
            if exc.filename is None and exc.errno is not None:  # a write on an open file names no path: name the target
                raise OSError(exc.errno, exc.strerror, str(target)) from exc
            raise
        swap_into_place(tmp, target)


def create_exclusive(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path``: never an existing file, never through a link; flushed to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write each ``name -> bytes`` into ``folder``, each file atomically (a fresh file renamed over the name).

    The new files are created exclusively inside a fresh temporary folder of ours (:func:`owned_temporary`),
    so no predictable name exists for anyone to plant a link at; the rename replaces a link at the
    destination rather than writing through it. Leftovers of killed earlier calls are removed first.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in _ours_matching(folder, FILES_PREFIX):
        if writer_gone(leftover, FILES_PREFIX):
            shutil.rmtree(leftover, ignore_errors=True)
    with owned_temporary(folder, FILES_PREFIX) as tmp:
        for name, data in files.items():
            try:
                create_exclusive(tmp / name, data)
            except OSError as exc:
                if exc.filename is None and exc.errno is not None:  # a write on an open file names no path
                    raise OSError(exc.errno, exc.strerror, str(folder / name)) from exc
                raise
        for name in files:
            os.replace(tmp / name, folder / name)


Fingerprint = tuple[int, int, int, int] | None


def fingerprint(path: Path) -> Fingerprint:
    """What stands at ``path`` now (device, inode, change time, size; None when nothing): a swap or an edit changes it."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size


def changed_since(path: Path, seen: Fingerprint) -> bool:
    """Whether something else was written at ``path`` after it was checked (``seen``)."""
    return fingerprint(path) != seen


def owned_marker(folder: Path) -> None:
    """Mark a folder this process just made (and means to keep across runs) as ours, if it is not yet."""
    if not (folder / MARKER).exists():
        _write_marker(folder, folder.name, exclusive=True)
