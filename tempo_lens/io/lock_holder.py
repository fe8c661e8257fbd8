"""Who holds a folder's lock: the process behind a ``flock``, named so a person waiting on it knows what they wait for.

Linux lists every held ``flock`` in ``/proc/locks`` with the holder's process id and the locked file's
device and inode; the holder's command line comes from ``/proc/PID/cmdline``. Where that is not available
(another system, another PID namespace) the holder is unknown and the message says so.
"""

from __future__ import annotations

import os
from pathlib import Path


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(64 * 1024)
    except OSError:
        return b""


def lock_holders(folder: Path) -> list[int]:
    """Process ids that hold a ``flock`` on ``folder`` (empty when none, or when this system cannot tell)."""
    try:
        info = os.stat(folder)
    except OSError:
        return []
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    holders = []
    for line in _read("/proc/locks").decode("ascii", "replace").splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device and fields[4].isdigit():
            holders.append(int(fields[4]))
    return sorted(set(holders))


def describe_holder(folder: Path) -> str:
    """``process 1234 (tempo-lens analyze runs)`` for the holder of ``folder``'s lock, or ``another process``."""
    for pid in lock_holders(folder):
        if pid == os.getpid():
            continue
        command = " ".join(_read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode("utf-8", "replace").split())
        return f"process {pid}" + (f" ({command[:120]})" if command else "")
    return "another process"
