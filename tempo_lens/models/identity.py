"""A model identified by what it is: a fingerprint of its folder's files, and its parameter count from its weights.

A model's name says where it was loaded from, not what was there: new weights copied into a folder keep
its name. :func:`folder_fingerprint` hashes every file a load reads (config, weights, tokenizer; not the
notes beside them) by content, so two folders with the same files have one fingerprint and any changed byte
gives another. Hashing a large model takes seconds, so each file's hash is cached under
``$TEMPO_LENS_CACHE`` keyed by its path, size, modification and change times: a file is hashed again only
when one of them changed. Every run records the fingerprint of its model (:func:`~tempo_lens.experiment.model_facts`);
a rerun keeps saved runs only when the fingerprint matches, and a report refuses runs of different ones.

:func:`checkpoint_parameters` counts the parameters the weights files hold (each stored tensor once), so the
count is the same whichever TransformerLens class loaded the model (a HookedTransformer unties the
unembedding and adds zero biases; a bridge may count views).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from ..errors import TempoLensError
from ..io.checksums import sha256_of
from ..io.records import read_json
from .cache import _write_json_atomically, cache_problem, cache_root
from .check import read_safetensors_header
from .zoo import DEFAULT_MODEL, is_zoo_name, zoo_model

CACHE_FILE = "file-hashes.json"
MAX_CACHED = 4096  # entries kept in the hash cache (the most recently used files)
NOT_READ = {"tempo_lens_complete.json"}  # the converted-model cache's own record (times of its conversion)
NOTES = (".md", ".txt", ".rst", ".png", ".jpg", ".jinja.bak")


def model_files(folder: Path) -> list[Path]:
    """The files of a model folder a load may read: every visible regular file but notes (README, images)."""
    files = []
    for path in sorted(Path(folder).iterdir()):
        name = path.name
        if name.startswith(".") or name in NOT_READ or not path.is_file():
            continue
        if name.lower().endswith(NOTES) and name != "merges.txt" and not name.startswith("vocab"):
            continue
        files.append(path)
    return files


def _cache_path() -> Path:
    return cache_root() / CACHE_FILE


def _stamp(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path, "hash cache", "it is rebuilt")
    except Exception:  # a damaged cache is only a cache: rebuilt
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, entries: dict[str, Any]) -> None:
    if len(entries) > MAX_CACHED:
        entries = dict(sorted(entries.items(), key=lambda kv: kv[1].get("used", 0))[-MAX_CACHED:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json_atomically(path, entries)
    except OSError:
        pass  # a read-only cache folder: every run hashes again, nothing else changes


def file_hashes(files: list[Path]) -> dict[str, str]:
    """sha256 of each file, from the cache when its size, times and inode are unchanged (else hashed and cached)."""
    cache = _cache_path()
    entries = _read_cache(cache)
    out, changed = {}, False
    for path in files:
        key = os.path.realpath(path)
        stamp = _stamp(Path(key))
        entry = entries.get(key)
        if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
            out[path.name] = entry["sha256"]
            continue
        digest = sha256_of(Path(key))
        if _stamp(Path(key)) == stamp:  # not written while it was hashed
            entries[key] = {"stamp": stamp, "sha256": digest, "used": time.time()}
            changed = True
        out[path.name] = digest
    if changed:
        _write_cache(cache, entries)
    return out


def folder_fingerprint(folder: Path) -> str:
    """A short hash of the model folder's files (names, sizes and content hashes): equal exactly when they are."""
    files = model_files(folder)
    hashes = file_hashes(files)
    listing = [[p.name, p.stat().st_size, hashes[p.name]] for p in files]
    return hashlib.sha256(json.dumps(listing).encode("utf-8")).hexdigest()[:20]


def model_source(name: str | None) -> Path | None:
    """The local folder the model ``name`` (None: the default) loads from, without loading it; None when there is
    none (a name only the hub can serve) or it cannot be loaded here."""
    from .loading import _resolve  # deferred: torch (through tempo_lens.models.loading)

    name = DEFAULT_MODEL if name is None else str(name)
    if is_zoo_name(name):  # its converted folder, when converted and intact (nothing is converted here)
        converted = cache_root() / zoo_model(name).cache_name
        return converted if cache_problem(converted) is None else None
    try:
        resolved = Path(_resolve(name))
    except (TempoLensError, OSError, ValueError):
        return None
    return resolved if resolved.is_dir() else None


def fingerprint_of(name: str | None) -> str | None:
    """The fingerprint of the model ``name`` as it is on disk now (None: unknown, see :func:`model_source`)."""
    folder = model_source(name)
    return None if folder is None else folder_fingerprint(folder)


def loaded_fingerprint(model: Any) -> str | None:
    """The fingerprint of the folder a loaded model came from (:func:`~tempo_lens.load_model` records it)."""
    source = getattr(model, "tempo_lens_source", None)
    return folder_fingerprint(Path(source)) if source and Path(source).is_dir() else None


def checkpoint_parameters(folder: Path) -> int | None:
    """Parameters the folder's safetensors weights hold (each stored tensor once); None without safetensors."""
    total, found = 0, False
    for path in model_files(folder):
        if not path.name.endswith(".safetensors"):
            continue
        header = read_safetensors_header(path)
        if isinstance(header, str):
            return None
        found = True
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= int(dim)
                total += count
    return total if found else None
