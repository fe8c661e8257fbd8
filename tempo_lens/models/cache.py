"""Integrity of converted-model folders: a completion marker with a sha256 for every file.

A conversion writes ``tempo_lens_complete.json`` last. It records each file's size, sha256 and a
stat fingerprint (mtime and ctime in ns). A normal load (:func:`cache_problem`) re-hashes every small
file (configs, tokenizers) and a large one only when its fingerprint changed, so any write to a
weights file (which moves its ctime, even when the mtime is set back) is caught before the model is
used, while an untouched cache costs a few ``stat`` calls. ``full=True`` (``tempo-lens models
--verify``) hashes everything. A file whose fingerprint changed but whose hash still matches (a copy,
a ``touch``) gets its fingerprint refreshed in the marker, so the next load is cheap again.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..io.atomic import MARKER as OWNER_MARKER
from ..io.checksums import sha256_of

MARKER = "tempo_lens_complete.json"
CACHE_FORMAT = 2
ALWAYS_HASH_BYTES = 64 * 2**20  # files up to this size are hashed at every load


def cache_root() -> Path:
    """Where converted models live: ``$TEMPO_LENS_CACHE`` or ``~/.cache/tempo_lens``."""
    return Path(os.environ.get("TEMPO_LENS_CACHE", Path.home() / ".cache" / "tempo_lens"))


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def _cached_files(directory: Path) -> list[Path]:
    """The converted files (not the completion record, nor the ownership marker of the write that made them)."""
    return [p for p in sorted(directory.iterdir()) if p.name not in (MARKER, OWNER_MARKER)]


def write_marker(directory: Path, source: dict) -> None:
    """Record every file of ``directory`` (size, sha256, fingerprint); written last by a conversion."""
    files = {}
    for path in _cached_files(directory):
        if not path.is_file():
            raise ValueError(f"{path} is not a plain file; a converted model folder holds files only")
        files[path.name] = {**_stamp(path), "sha256": sha256_of(path)}
    _write_json_atomically(directory / MARKER, {"format": CACHE_FORMAT, "source": source, "files": files})


def _write_json_atomically(path: Path, data: dict) -> None:
    """A fresh file of a random name (``mkstemp``: created exclusively, never through a link), renamed over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(data, indent=1))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_marker(directory: Path) -> dict | str:
    """The marker's contents, or why it cannot be used."""
    marker = directory / MARKER
    if not marker.is_file():
        return "no completion marker (an interrupted conversion?)"
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "unreadable completion marker"
    if not isinstance(recorded, dict) or recorded.get("format") != CACHE_FORMAT or not isinstance(recorded.get("files"), dict):
        found = recorded.get("format") if isinstance(recorded, dict) else None
        return f"cache format {found!r}, expected {CACHE_FORMAT} (written by another version)"
    return recorded


def cache_problem(directory: Path, full: bool = False) -> str | None:
    """Why a converted-model folder is unusable (naming the damaged file), or None when it is intact.

    ``full`` hashes every file; otherwise large files are hashed only when their fingerprint changed.
    """
    if not directory.is_dir():
        return "not converted yet"
    recorded = read_marker(directory)
    if isinstance(recorded, str):
        return recorded
    files: dict = recorded["files"]
    present = {p.name for p in _cached_files(directory)}
    if present != set(files):
        missing, extra = sorted(set(files) - present), sorted(present - set(files))
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unexpected {', '.join(extra)}"] if extra else [])
        return f"files differ from those recorded at conversion ({'; '.join(parts)})"
    refreshed = False
    for name, entry in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is not a plain file"
        stamp = _stamp(path)
        if stamp["size"] != entry.get("size"):
            return f"{name} differs from the file recorded at conversion: {stamp['size']} bytes, recorded {entry.get('size')} (truncated or edited)"
        changed = stamp["mtime_ns"] != entry.get("mtime_ns") or stamp["ctime_ns"] != entry.get("ctime_ns")
        if full or changed or stamp["size"] <= ALWAYS_HASH_BYTES:
            if sha256_of(path) != entry.get("sha256"):
                return f"{name} differs from its sha256 recorded at conversion (damaged or edited in place)"
            if changed:
                entry.update(stamp)
                refreshed = True
    if refreshed:
        try:  # best effort: a read-only cache is still usable, only checked in full again next time
            _write_json_atomically(directory / MARKER, recorded)
        except OSError:
            pass
    return None
