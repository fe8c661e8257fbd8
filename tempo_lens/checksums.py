"""File checksums: the sha256 every stored thing is verified with (saved runs and results, reports, the model cache, GGUF parts)."""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 8 * 2**20  # read in blocks, so a multi-GB file never sits in memory whole


def sha256_of(*paths: Path) -> str:
    """The sha256 of the files' bytes, in order (one file, or the parts of one file)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while block := handle.read(BLOCK):
                digest.update(block)
    return digest.hexdigest()
