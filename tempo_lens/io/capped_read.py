"""Reading a small file whole, safely: a regular file of at most a byte limit, or a refusal saying why.

A FIFO, a device such as ``/dev/zero`` or a folder is refused before anything is read (the file is
opened non-blocking, so nothing waits on a pipe's writer), and a file larger than the limit is
refused from its size, so nothing fills memory. Each caller turns :class:`CappedReadError` into its
own error type and wording.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

Refusal = Literal["open", "folder", "special", "too_large", "read", "grew"]
"""Why a file was refused: it could not be opened, is a folder, is not a regular file (a device, pipe or
socket), is larger than the limit, could not be read, or grew past the limit while being read."""


class CappedReadError(Exception):
    """A refused file: ``reason``, the OS error behind it (``open``, ``read``), and its size (``too_large``)."""

    def __init__(self, reason: Refusal, error: OSError | None = None, size: int = 0):
        super().__init__(reason if error is None else f"{reason}: {error}")
        self.reason, self.error, self.size = reason, error, size

    @property
    def cause(self) -> str:
        """The OS's words for the error behind the refusal (its ``strerror``, else the error itself)."""
        return str(self.error.strerror or self.error) if self.error is not None else self.reason


def read_capped(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path`` if it holds at most ``limit`` bytes; :class:`CappedReadError` otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise CappedReadError("open", exc) from None
    try:  # checked on the descriptor, before ``fdopen`` (which refuses a folder with an error of its own)
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise CappedReadError("folder")
        if not stat.S_ISREG(info.st_mode):
            raise CappedReadError("special")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > limit:
            raise CappedReadError("too_large", size=info.st_size)
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise CappedReadError("read", exc) from None
    if len(data) > limit:
        raise CappedReadError("grew", size=len(data))
    return data
