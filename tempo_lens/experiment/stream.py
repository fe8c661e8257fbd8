"""Long experiments streamed to disk: each finished chunk of prompts is saved at once, and a rerun resumes.

``tempo-lens run`` of more than :data:`STREAM_ABOVE` prompts (per shard) generates them in chunks of
:data:`CHUNK_PROMPTS`; each finished chunk is saved (atomically) as ``chunk-NNNNN`` in a progress
folder beside the target, ``.NAME.partial-KEY`` (KEY: a hash of the config, model, dtype and shard,
so only the same experiment resumes it). An interrupted run keeps every finished chunk; running the
same command again skips them. When all chunks are there, they are combined into the target one
chunk at a time (:func:`~.storage.write_runs`), so the whole experiment is never held in memory,
and the progress folder is removed. The progress folder is marked as ours like every temporary folder
(:mod:`tempo_lens.atomic`) and held under its lock while the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import Fingerprint, folder_lock, is_ours, owned_marker
from ..errors import ExperimentFileError
from .config import ExperimentConfig
from .runner import run_experiment, shard_indices
from .storage import (
    METADATA,
    Experiment,
    check_can_write,
    check_unchanged,
    load_experiment,
    save_experiment,
    write_runs,
)

if TYPE_CHECKING:
    from ..backends.base import BackendName

STREAM_ABOVE = 64  # prompts: a run of more is streamed to disk in chunks
CHUNK_PROMPTS = 64


def progress_folder(target: Path, config: ExperimentConfig, shard: tuple[int, int] | None) -> Path:
    """Where the finished chunks of this experiment (config, model, dtype, shard) into ``target`` are kept."""
    key = json.dumps([config.to_dict(), config.model, config.dtype, shard], sort_keys=True, default=str)
    return target.with_name(f".{target.name}.partial-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:12]}")


def _chunks(indices: list[int]) -> list[list[int]]:
    return [indices[k : k + CHUNK_PROMPTS] for k in range(0, len(indices), CHUNK_PROMPTS)]


def run_streamed(
    config: ExperimentConfig,
    target: Path,
    *,
    shard: tuple[int, int] | None,
    overwrite: bool,
    expect: Fingerprint,
    progress: Callable[[str], None],
    allow_large: bool = False,
    backend: BackendName = "bridge",
) -> Path:
    """Run ``config`` chunk by chunk into ``target`` (resuming finished chunks), then combine them."""
    from .budget import check_run_count

    indices = shard_indices(len(config.prompts), shard)
    check_run_count(config, allow_large, n_prompts=len(indices))
    folder = progress_folder(target, config, shard)
    if (folder.exists() or folder.is_symlink()) and not is_ours(folder):
        raise ExperimentFileError(f"{folder} exists and was not made by tempo-lens; move it away, then run again")
    folder.mkdir(parents=True, exist_ok=True)
    owned_marker(folder)
    chunks = _chunks(indices)
    with folder_lock(folder, wait_s=1.0):
        model = None
        for k, chunk in enumerate(chunks):
            part = folder / f"chunk-{k:05d}"
            if (part / METADATA).is_file():
                progress(f"{config.name}: chunk {k + 1}/{len(chunks)} was finished by an earlier run; kept")
                continue
            if model is None:
                from ..model import load_model

                model = load_model(config.model, dtype=config.dtype, backend=backend)
            progress(f"{config.name}: chunk {k + 1}/{len(chunks)} ({len(chunk)} prompts)")
            experiment = run_experiment(config, model, shard=shard, progress=progress, allow_large=True, prompt_indices=chunk)
            save_experiment(experiment, part, overwrite=True)
        parts = [folder / f"chunk-{k:05d}" for k in range(len(chunks))]
        header = load_experiment(parts[0])
        with folder_lock(target.parent):
            check_can_write(target, overwrite)
            check_unchanged(target, expect)
            write_runs(header, _groups(parts, header), target)
    shutil.rmtree(folder, ignore_errors=True)
    return target


def _groups(parts: list[Path], header: Experiment) -> Iterator[list]:
    """Each chunk's runs, loaded one chunk at a time; a chunk of another config or model is refused."""
    for part in parts:
        experiment = load_experiment(part)
        if (experiment.config, experiment.model, experiment.shard) != (header.config, header.model, header.shard):
            raise ExperimentFileError(
                f"{part} holds another config or model than {parts[0].name}; remove {part.parent} and run again"
            )
        yield experiment.runs
