"""File checksums: the sha256 every stored thing is verified with (saved runs and results, reports, the model cache, GGUF parts)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

BLOCK = 8 * 2**20  # read in blocks, so a multi-GB file never sits in memory whole


def sha256_of(*paths: Path) -> str:
    """The sha256 of the files' bytes, in order (one file, or the parts of one file)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while block := handle.read(BLOCK):
                digest.update(block)
    return digest.hexdigest()


def sha256_of_open(handle: BinaryIO) -> str:
    """The sha256 of an open file's bytes from its start; the handle is left at its start again."""
    digest = hashlib.sha256()
    handle.seek(0)
    while block := handle.read(BLOCK):
        digest.update(block)
    handle.seek(0)
    return digest.hexdigest()
