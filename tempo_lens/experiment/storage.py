"""Experiment storage: a folder of arrays + JSON, written atomically, reloadable without the model.

A folder holds ``metadata.json`` (format version, config, model facts, package versions, every run's
layout and token texts, a checksum of the arrays) and ``attention.npz`` (the per-step arrays
``[layers, batch, heads, queries, keys]``, stored uncompressed). It is written into a temporary sibling
folder and renamed into place, so a crash never leaves a half-written experiment that loads as valid,
and the previous result stays intact until the new one is complete. ``--shard i/n`` runs every n-th prompt; shard folders
placed side by side (``shard-i-of-n``) are merged by :func:`load_experiment`, which refuses anything that
is not exactly one split of one config (:mod:`.shards`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum, auto
from pathlib import Path
from typing import Literal

import numpy as np

from ..capture import CapturedRun
from ..errors import ExperimentFileError, InvalidInputError, describe
from ..io.atomic import (
    MARKER,
    Fingerprint,
    abandoned_backups,
    atomic_directory,
    changed_since,
    fingerprint,
    folder_lock,
    remove_abandoned,
    restore_backup,
)
from ..io.checksums import sha256_of, sha256_of_open
from ..io.records import read_json
from ..io.saved_arrays import ArraysOnDisk, StepsOnDisk, read_arrays
from ..io.writable import check_writable
from ..layout import TokenLayout
from .record import check_metadata

FORMAT_VERSION = 3  # 2: metadata carries a checksum of its own content; 3: GenerationConfig keys, no seed, mask of controls
METADATA = "metadata.json"
ARRAYS = "attention.npz"
KNOCKOUT = "knockout.json"  # the knock-out beside the runs (tempo_lens.analysis.knockout_store); optional
FIX = "re-run the experiment"
SHARD_NAME = re.compile(r"shard-(\d+)-of-(\d+)")  # the folders of one shard of a split run


class _Unchecked(Enum):
    """The default of ``save_experiment(expect=...)``: no fingerprint to check (None is one: no folder yet)."""

    UNCHECKED = auto()


# ---- experiments in memory ----------------------------------------------------------------------


@dataclass
class Experiment:
    """Runs plus the facts needed to read them (model shape, config, versions)."""

    config: dict
    runs: list[CapturedRun]
    model: dict
    versions: dict = field(default_factory=dict)
    shard: str | None = None
    path: Path | None = None
    digest: str | None = None  # the metadata checksum of the folder it was loaded from (None: not loaded, or merged)

    def run(self, name: str) -> CapturedRun:
        for run in self.runs:
            if run.name == name:
                return run
        raise KeyError(f"no run {name!r}; runs: {[r.name for r in self.runs]}")

    def generated(self) -> list[CapturedRun]:
        return [r for r in self.runs if r.meta.get("variant", "generated") == "generated"]

    def variant(self, variant: str) -> list[CapturedRun]:
        return [r for r in self.runs if r.meta.get("variant") == variant]


# ---- files --------------------------------------------------------------------------------------


def recover_interrupted_overwrite(target: Path) -> Path | None:
    """Put back the previous result when an overwrite was killed between its two renames.

    :func:`save_experiment` moves the old folder aside (``.NAME.old-*``) and then moves the new one in;
    a process killed between the two leaves no ``NAME`` at all. If so, the newest complete backup whose
    writer has ended is renamed back (and returned), so the previous result is never lost; a backup of a
    write still running is left to that write.
    """
    if target.exists() or target.is_symlink() or not target.parent.is_dir():
        return None
    complete = [p for p in abandoned_backups(target) if (p / METADATA).is_file()]
    if not complete:
        return None
    restore_backup(complete[-1], target)
    warnings.warn(f"restored {target} from {complete[-1].name}, left by an interrupted overwrite", stacklevel=3)
    return target


def is_experiment_folder(folder: Path) -> bool:
    """A folder holding only what an experiment write puts there (the arrays, the metadata, our marker)."""
    return (
        folder.is_dir()
        and not folder.is_symlink()
        and all(p.name in (METADATA, ARRAYS, MARKER) and p.is_file() and not p.is_symlink() for p in folder.iterdir())
    )


def check_can_write(target: Path, overwrite: bool) -> Fingerprint:
    """Refuse an existing target without ``overwrite``, and never replace something that is not an experiment.

    ``overwrite`` replaces an experiment folder (its own files, and ``shard-i-of-n`` folders that are
    themselves experiment folders, intact or damaged), never a file or a folder holding anything else
    (a ``shard-notes/`` folder included), so a mistyped ``--out`` cannot delete data. Returns the
    target's fingerprint, for the write to check that nobody replaced it in between.
    """
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ExperimentFileError(f"cannot write {target}: {parent} is a file, not a folder; choose another --out")
            break

    check_writable(target)  # before the long work: a read-only --out is refused now, not after the generation
    recover_interrupted_overwrite(target)
    if not (target.exists() or target.is_symlink()):
        return None
    if not overwrite:
        raise ExperimentFileError(
            f"{target} already exists; pass --overwrite (overwrite=True) to replace it, or choose another --out"
        )
    if target.is_symlink() or not target.is_dir():
        raise ExperimentFileError(
            f"{target} exists and is not an experiment folder; --overwrite only replaces experiment folders. Choose another --out"
        )
    foreign = sorted(
        p.name
        for p in target.iterdir()
        if not (p.name in (METADATA, ARRAYS, MARKER, KNOCKOUT) and p.is_file() and not p.is_symlink())
        and not (SHARD_NAME.fullmatch(p.name) and is_experiment_folder(p))
    )
    if foreign:
        raise ExperimentFileError(
            f"{target} holds files that are not part of an experiment ({', '.join(foreign[:5])}); --overwrite only "
            "replaces experiment folders. Choose another --out or move those files"
        )
    return fingerprint(target)


def check_unchanged(target: Path, seen: Fingerprint) -> None:
    """At commit time: refuse when another process wrote ``target`` after it was checked (``seen``)."""
    if changed_since(target, seen):
        raise ExperimentFileError(
            f"{target} was written by another process while this one ran; nothing was replaced. Check what is "
            "there now, then run again (with --overwrite to replace it) or choose another --out"
        )


def folder_path(directory: object, what: str = "experiment folder") -> Path:
    """``directory`` as a Path, or a clear error for None, numbers and text with NUL bytes."""
    if not isinstance(directory, (str, os.PathLike)) or not str(directory).strip():
        raise InvalidInputError(f"the {what} must be a path (text or pathlib.Path), got {directory!r}")
    if "\0" in str(directory):
        raise InvalidInputError(f"the {what} {str(directory)!r} contains a NUL byte; pass a real path")
    return Path(directory)


def save_experiment(
    experiment: Experiment,
    directory: str | os.PathLike,
    *,
    overwrite: bool = False,
    expect: Fingerprint | Literal[_Unchecked.UNCHECKED] = _Unchecked.UNCHECKED,
) -> Path:
    """Write atomically: a temporary sibling folder, then a rename; an existing folder needs ``overwrite``.

    The write holds the lock of the folder it writes into (:func:`~tempo_lens.io.atomic.folder_lock`), so
    writers of one folder never interleave, and checks the target again under it. ``expect`` is what
    :func:`check_can_write` returned before a long run: if another process wrote the target since, the
    write is refused rather than replacing that work. Temporary folders that killed writes into the same
    target left behind are removed first.
    """
    if not isinstance(experiment, Experiment):
        raise InvalidInputError(
            f"save_experiment needs an Experiment (from run_experiment or load_experiment), got {type(experiment).__name__}"
        )
    target = save_runs(experiment, [experiment.runs], directory, overwrite=overwrite, expect=expect)
    experiment.path = target
    return target


def save_runs(
    header: Experiment,
    groups: Iterable[Iterable[CapturedRun]],
    directory: str | os.PathLike,
    *,
    overwrite: bool = False,
    expect: Fingerprint | Literal[_Unchecked.UNCHECKED] = _Unchecked.UNCHECKED,
) -> Path:
    """:func:`save_experiment` of ``header`` with the runs of ``groups`` (one group in memory at a time, :func:`write_runs`)."""
    target = folder_path(directory)
    check_can_write(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(target.parent):
        check_can_write(target, overwrite)
        if expect is not _Unchecked.UNCHECKED:
            check_unchanged(target, expect)
        remove_abandoned(target)
        return write_runs(header, groups, target)


def write_arrays(path: Path, groups: Iterable[Iterable[CapturedRun]]) -> list[dict]:
    """Stream every run's arrays (``r{i}_s{step}``, float32) into the archive at ``path``; returns the runs' metadata.

    Members are stored uncompressed: attention weights hardly deflate (about 8 % smaller, at ten times the write time).
    """
    runs_meta: list[dict] = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for runs in groups:
            for run in runs:
                i = len(runs_meta)
                for step, array in run.attention.items():
                    with archive.open(f"r{i}_s{step}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
                runs_meta.append(
                    {
                        "name": run.name,
                        "prompt": run.prompt,
                        "mode": run.mode,
                        "layers": run.layers,
                        "steps": sorted(run.attention),
                        "token_strings": run.token_strings,
                        "layout": run.layout.to_dict(),
                        "meta": run.meta,
                    }
                )
    return runs_meta


def write_runs(header: Experiment, groups: Iterable[Iterable[CapturedRun]], target: Path) -> Path:
    """Write ``header``'s config, model, versions and shard with the runs of ``groups``, atomically.

    The arrays are streamed into the archive one at a time, so a group (a saved chunk loaded lazily) can
    be dropped before the next is read: a long experiment is combined without holding it all in memory.
    Call under the target's folder lock (:func:`save_experiment` does).
    """
    with atomic_directory(target) as tmp:
        runs_meta = write_arrays(tmp / ARRAYS, groups)  # looked up at call time (fault tests patch it)
        metadata = {
            "format_version": FORMAT_VERSION,
            "kind": "tempo_lens.experiment",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": header.config,
            "model": header.model,
            "versions": header.versions,
            "shard": header.shard,
            "arrays_sha256": sha256_of(tmp / ARRAYS),
            "runs": runs_meta,
        }
        metadata["metadata_sha256"] = _metadata_digest(metadata)
        with open(tmp / METADATA, "w", encoding="utf-8") as handle:
            json.dump(metadata, handle, indent=1, allow_nan=True)
            handle.flush()
            os.fsync(handle.fileno())
    return target


def _metadata_digest(metadata: dict) -> str:
    """Checksum of the metadata's content (every key but the checksum itself), so edits are detected."""
    content = {k: v for k, v in metadata.items() if k != "metadata_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, allow_nan=True).encode("utf-8")).hexdigest()


def _read_metadata(directory: Path) -> dict:
    """The parsed, bounded, depth-checked metadata (checksum and schema are checked by :func:`_load_single`)."""
    path = directory / METADATA
    if directory.exists() and not directory.is_dir():
        raise ExperimentFileError(f"{directory} is a file, not an experiment folder; pass the folder `tempo-lens run` wrote")
    if not directory.is_dir():
        raise ExperimentFileError(
            f"{directory} is not an experiment folder (it does not exist); run `tempo-lens run CONFIG --out {directory}` first"
        )
    if not path.is_file():
        raise ExperimentFileError(f"{directory} has no {METADATA}: not an experiment folder, or an interrupted write; {FIX}")
    data = read_json(path, METADATA, FIX)
    if not isinstance(data, dict) or data.get("kind") != "tempo_lens.experiment":
        raise ExperimentFileError(f"{path} is not a tempo_lens experiment file; {FIX}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        numeric = isinstance(version, (int, float)) and not isinstance(version, bool)
        relation = ("newer" if version > FORMAT_VERSION else "older") if numeric else "unknown"
        raise ExperimentFileError(
            f"{directory} has experiment format version {version!r} ({relation}); this tempo_lens reads version "
            f"{FORMAT_VERSION}. Re-run the experiment with this version (or install the tempo_lens that wrote it)."
        )
    return data


def intact_metadata(directory: Path) -> dict | None:
    """The metadata of an experiment folder whose metadata and arrays match their checksums (the arrays are
    hashed, not loaded); None when it is missing, damaged or of another format."""
    try:
        data = _read_metadata(directory)
        record = check_metadata(data, str(directory / METADATA), FIX)
        if record.metadata_sha256 != _metadata_digest(data) or sha256_of(directory / ARRAYS) != record.arrays_sha256:
            return None
    except (ExperimentFileError, OSError):
        return None
    return data


def _load_single(directory: Path, lazy: bool = False) -> Experiment:
    """One experiment folder: metadata bounded, checksummed and typed, then exactly the arrays it describes."""
    data = _read_metadata(directory)
    path = directory / METADATA
    record = check_metadata(data, str(path), FIX)
    arrays_path = directory / ARRAYS
    if not arrays_path.is_file():
        raise ExperimentFileError(f"{directory} is missing {ARRAYS}; {FIX}")
    layouts, shapes = [], {}
    for i, meta in enumerate(record.runs):
        try:
            layout = TokenLayout.from_dict(meta.layout)
            if len(meta.token_strings) != len(layout):
                raise ValueError(f"{len(meta.token_strings)} token texts for {len(layout)} tokens")
            for step in meta.steps:
                r = layout.step_range(step)
                shapes[f"r{i}_s{step}"] = (len(meta.layers), 1, record.model.n_heads, len(r), r.stop)
        except (InvalidInputError, ValueError, TypeError, IndexError) as exc:
            raise ExperimentFileError(
                f"{path}: field runs[{i}] ({meta.name!r}) does not fit its layout ({describe(exc)}); {FIX}"
            ) from None
        layouts.append(layout)
    if record.metadata_sha256 != _metadata_digest(data):
        raise ExperimentFileError(f"{path} does not match its own checksum (edited or damaged); {FIX}")
    steps_of = (
        _arrays_on_disk(arrays_path, shapes, record.arrays_sha256)
        if lazy
        else _arrays_in_memory(arrays_path, shapes, record.arrays_sha256)
    )
    runs = [
        CapturedRun(
            name=meta.name,
            prompt=meta.prompt,
            mode=meta.mode,
            layout=layout,
            token_strings=meta.token_strings,
            layers=meta.layers,
            attention=steps_of({s: f"r{i}_s{s}" for s in meta.steps}),
            meta=meta.meta,
        )
        for i, (meta, layout) in enumerate(zip(record.runs, layouts))
    ]
    return Experiment(
        config=data["config"],
        runs=runs,
        model=data["model"],
        versions=data["versions"],
        shard=record.shard,
        path=directory,
        digest=record.metadata_sha256,
    )


def _checksum_refusal(arrays_path: Path) -> ExperimentFileError:
    return ExperimentFileError(f"{arrays_path} does not match the checksum in {METADATA} (truncated or edited); {FIX}")


def _arrays_in_memory(arrays_path: Path, shapes: dict, sha256: str) -> Callable[[dict[int, str]], Mapping[int, np.ndarray]]:
    """Every array read now; returns a run's steps from their array names."""
    if sha256_of(arrays_path) != sha256:
        raise _checksum_refusal(arrays_path)
    arrays = read_arrays(arrays_path, shapes, FIX)
    return lambda names: {step: arrays[name] for step, name in names.items()}


def _arrays_on_disk(arrays_path: Path, shapes: dict, sha256: str) -> Callable[[dict[int, str]], Mapping[int, np.ndarray]]:
    """The archive checked now and read later; returns a run's steps (read when used) from their array names."""
    handle = open(arrays_path, "rb")  # held open: what is read later is the file checked now
    try:
        if sha256_of_open(handle) != sha256:
            raise _checksum_refusal(arrays_path)
        arrays = ArraysOnDisk(handle, arrays_path, shapes, FIX)
    except BaseException:
        handle.close()
        raise
    return lambda names: StepsOnDisk(arrays, names)
