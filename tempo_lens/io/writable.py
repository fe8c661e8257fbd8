"""Whether an output can be written, checked before the work that produces it.

A write lands in a temporary sibling of its target, renamed into place (:mod:`tempo_lens.io.atomic`), so
what must be writable is the nearest folder that exists on the way to the target: the target's parent,
or the ancestor in which the missing folders will be made. A read-only folder, a read-only file system
or an immutable folder is refused at once, naming the folder, instead of after minutes of generation.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import ExperimentFileError


def nearest_existing(path: Path) -> Path:
    """``path`` itself or its nearest ancestor that exists (the current folder for a bare relative name)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_writable(target: Path, flag: str = "--out") -> None:
    """Refuse a ``target`` whose nearest existing folder this process cannot create entries in."""
    base = nearest_existing(Path(target).parent)
    if not base.is_dir():
        raise ExperimentFileError(f"cannot write {target}: {base} is a file, not a folder; choose another {flag}")
    if os.access(base, os.W_OK | os.X_OK):
        return
    try:
        read_only = os.statvfs(base).f_flag & os.ST_RDONLY
    except OSError:
        read_only = False
    why = os.strerror(errno.EROFS) if read_only else "no permission to create files there"
    raise ExperimentFileError(
        f"cannot write {target}: {base} is not writable ({why}); nothing was generated. Choose another {flag}, "
        "or make the folder writable"
    )
