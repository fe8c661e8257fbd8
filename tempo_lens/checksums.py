"""File checksums: the sha256 every stored thing is verified with (saved runs and results, reports, the model cache, GGUF parts)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

BLOCK = 8 * 2**20  # read in blocks, so a multi-GB file never sits in memory whole


def sha256_of(*paths: Path, progress: Callable[[int], None] | None = None) -> str:
    """The sha256 of the files' bytes, in order (one file, or the parts of one file); ``progress`` gets the bytes read so far."""
    digest = hashlib.sha256()
    done = 0
    for path in paths:
        with open(path, "rb") as handle:
            while block := handle.read(BLOCK):
                digest.update(block)
                done += len(block)
                if progress is not None:
                    progress(done)
    return digest.hexdigest()
