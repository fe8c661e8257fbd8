"""Folders written atomically: fill a temporary sibling, then swap it into place with renames.

A reader sees the old folder or the new one, never a half-written one. The old folder is moved aside
(``.NAME.old-*``) until the new one is in place, and moved back if that rename fails; a process killed
between the two renames leaves the backup, which :func:`backups` finds.
"""

from __future__ import annotations

import contextlib
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
    try:
        yield tmp
        swap_into_place(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
