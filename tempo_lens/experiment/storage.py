"""Experiment storage: a folder of arrays + JSON, written atomically, reloadable without the model.

A folder holds ``metadata.json`` (format version, config, model facts, package versions, every run's
layout and token texts, a checksum of the arrays) and ``attention.npz`` (compressed per-step arrays
``[layers, batch, heads, queries, keys]``). It is written into a temporary sibling folder and renamed
into place, so a crash never leaves a half-written experiment that loads as valid, and the previous
result stays intact until the new one is complete. ``--shard i/n`` runs every n-th prompt; shard folders
placed side by side (``shard-i-of-n``) are merged by :func:`load_experiment`, which refuses anything that
is not exactly one split of one config (:mod:`.shards`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import abandoned_backups, atomic_directory, remove_abandoned
from ..capture import CapturedRun
from ..checksums import sha256_of
from ..errors import ExperimentFileError, InvalidInputError
from ..layout import TokenLayout

FORMAT_VERSION = 3  # 2: metadata carries a checksum of its own content; 3: GenerationConfig keys, no seed, mask of controls
METADATA = "metadata.json"
ARRAYS = "attention.npz"


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
    os.replace(complete[-1], target)
    warnings.warn(f"restored {target} from {complete[-1].name}, left by an interrupted overwrite", stacklevel=3)
    return target


def check_can_write(target: Path, overwrite: bool) -> None:
    """Refuse an existing target without ``overwrite``, and never replace something that is not an experiment.

    ``overwrite`` replaces an experiment folder (its own files and ``shard-i-of-n`` folders, intact or
    damaged), never a file or a folder holding anything else, so a mistyped ``--out`` cannot delete data.
    """
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ExperimentFileError(f"cannot write {target}: {parent} is a file, not a folder; choose another --out")
            break
    recover_interrupted_overwrite(target)
    if not (target.exists() or target.is_symlink()):
        return
    if not overwrite:
        raise ExperimentFileError(f"{target} already exists; pass --overwrite (overwrite=True) to replace it, or choose another --out")
    if target.is_symlink() or not target.is_dir():
        raise ExperimentFileError(f"{target} exists and is not an experiment folder; --overwrite only replaces experiment folders. Choose another --out")
    foreign = sorted(
        p.name for p in target.iterdir()
        if not (p.name in (METADATA, ARRAYS) and p.is_file()) and not (p.is_dir() and p.name.startswith("shard-"))
    )
    if foreign:
        raise ExperimentFileError(
            f"{target} holds files that are not part of an experiment ({', '.join(foreign[:5])}); --overwrite only "
            "replaces experiment folders. Choose another --out or move those files"
        )


def folder_path(directory: object, what: str = "experiment folder") -> Path:
    """``directory`` as a Path, or a clear error for None, numbers and text with NUL bytes."""
    if not isinstance(directory, (str, os.PathLike)) or not str(directory).strip():
        raise InvalidInputError(f"the {what} must be a path (text or pathlib.Path), got {directory!r}")
    if "\0" in str(directory):
        raise InvalidInputError(f"the {what} {str(directory)!r} contains a NUL byte; pass a real path")
    return Path(directory)


def save_experiment(experiment: Experiment, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write atomically: a temporary sibling folder, then a rename; an existing folder needs ``overwrite``.

    Temporary folders that killed writes into the same target left behind are removed first.
    """
    if not isinstance(experiment, Experiment):
        raise InvalidInputError(f"save_experiment needs an Experiment (from run_experiment or load_experiment), got {type(experiment).__name__}")
    target = folder_path(directory)
    check_can_write(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(target)
    with atomic_directory(target) as tmp:
        arrays = {}
        runs_meta = []
        for i, run in enumerate(experiment.runs):
            for step, array in run.attention.items():
                arrays[f"r{i}_s{step}"] = np.ascontiguousarray(array, dtype=np.float32)
            runs_meta.append({
                "name": run.name, "prompt": run.prompt, "mode": run.mode, "layers": run.layers,
                "steps": sorted(run.attention), "token_strings": run.token_strings,
                "layout": run.layout.to_dict(), "meta": run.meta,
            })
        np.savez_compressed(tmp / ARRAYS, **arrays)  # type: ignore[arg-type]  # numpy stubs read **arrays as its flags
        metadata = {
            "format_version": FORMAT_VERSION,
            "kind": "tempo_lens.experiment",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": experiment.config,
            "model": experiment.model,
            "versions": experiment.versions,
            "shard": experiment.shard,
            "arrays_sha256": sha256_of(tmp / ARRAYS),
            "runs": runs_meta,
        }
        metadata["metadata_sha256"] = _metadata_digest(metadata)
        with open(tmp / METADATA, "w", encoding="utf-8") as handle:
            json.dump(metadata, handle, indent=1, allow_nan=True)
            handle.flush()
            os.fsync(handle.fileno())
    experiment.path = target
    return target


def _metadata_digest(metadata: dict) -> str:
    """Checksum of the metadata's content (every key but the checksum itself), so edits are detected."""
    content = {k: v for k, v in metadata.items() if k != "metadata_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, allow_nan=True).encode("utf-8")).hexdigest()


def _read_metadata(directory: Path) -> dict:
    path = directory / METADATA
    if directory.exists() and not directory.is_dir():
        raise ExperimentFileError(f"{directory} is a file, not an experiment folder; pass the folder `tempo-lens run` wrote")
    if not directory.is_dir():
        raise ExperimentFileError(f"{directory} is not an experiment folder (it does not exist); run `tempo-lens run CONFIG --out {directory}` first")
    if not path.is_file():
        raise ExperimentFileError(f"{directory} has no {METADATA}: not an experiment folder, or an interrupted write; re-run the experiment")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ExperimentFileError(f"{path} is corrupt ({exc}); re-run the experiment") from None
    if not isinstance(data, dict) or data.get("kind") != "tempo_lens.experiment":
        raise ExperimentFileError(f"{path} is not a tempo_lens experiment file; re-run the experiment")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        numeric = isinstance(version, (int, float)) and not isinstance(version, bool)
        relation = ("newer" if version > FORMAT_VERSION else "older") if numeric else "unknown"
        raise ExperimentFileError(
            f"{directory} has experiment format version {version!r} ({relation}); this tempo_lens reads version "
            f"{FORMAT_VERSION}. Re-run the experiment with this version (or install the tempo_lens that wrote it)."
        )
    return data


def _load_single(directory: Path) -> Experiment:
    data = _read_metadata(directory)
    arrays_path = directory / ARRAYS
    if not arrays_path.is_file():
        raise ExperimentFileError(f"{directory} is missing {ARRAYS}; re-run the experiment")
    if sha256_of(arrays_path) != data.get("arrays_sha256"):
        raise ExperimentFileError(f"{arrays_path} does not match the checksum in {METADATA} (truncated or edited); re-run the experiment")
    try:
        with np.load(arrays_path) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ExperimentFileError(f"{arrays_path} is unreadable ({exc}); re-run the experiment") from None
    runs = []
    try:
        config, model = data["config"], data["model"]
        for i, meta in enumerate(data["runs"]):
            layout = TokenLayout.from_dict(meta["layout"])
            attention = {int(s): arrays[f"r{i}_s{s}"] for s in meta["steps"]}
            n_layers = len(meta["layers"])
            for step, array in attention.items():
                r = layout.step_range(step)
                if array.ndim != 5 or array.shape[0] != n_layers or array.shape[3] != len(r) or array.shape[4] != r.stop:
                    raise ValueError(f"run {meta['name']} step {step}: array shape {array.shape} does not fit the layout")
            if len(meta["token_strings"]) != len(layout):
                raise ValueError(f"run {meta['name']}: {len(meta['token_strings'])} token texts for {len(layout)} tokens")
            runs.append(CapturedRun(
                name=meta["name"], prompt=meta["prompt"], mode=meta["mode"], layout=layout,
                token_strings=meta["token_strings"], layers=meta["layers"], attention=attention, meta=meta["meta"],
            ))
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise ExperimentFileError(f"{directory}: metadata does not fit the arrays ({exc}); re-run the experiment") from None
    if data.get("metadata_sha256") != _metadata_digest(data):
        raise ExperimentFileError(f"{directory / METADATA} does not match its own checksum (edited or damaged); re-run the experiment")
    return Experiment(config=config, runs=runs, model=model, versions=data.get("versions", {}),
                      shard=data.get("shard"), path=directory)


def load_experiment(directory: str | os.PathLike) -> Experiment:
    """Reload an experiment without the model; a folder of ``shard-i-of-n`` folders is merged.

    The shards must add up to exactly one split of one config (see :func:`.shards.shard_folders`).
    """
    from .shards import merge_experiments, shard_folders  # shards builds on this module

    directory = folder_path(directory)
    recover_interrupted_overwrite(directory)
    folders = shard_folders(directory)
    if not folders:
        return _load_single(directory)
    parts = [_load_single(folder) for folder in folders]
    return merge_experiments(parts, path=directory)
