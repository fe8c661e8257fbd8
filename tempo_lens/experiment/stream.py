"""Long experiments streamed to disk: each finished chunk of prompts is saved at once, and a rerun resumes.

``tempo-lens run`` of more than :data:`STREAM_ABOVE` prompts (per shard), and each such config of
``tempo-lens analyze``, generates them in chunks of :data:`CHUNK_PROMPTS`; each finished chunk is
saved (atomically) as ``chunk-NNNNN`` in a progress folder beside the target, ``.NAME.partial-KEY``
(KEY: a hash of the config, model, dtype, backend and shard, so only the same experiment resumes it).
An interrupted run keeps every finished chunk; running the same command again skips them. When all
chunks are there, they are combined into the target one chunk at a time (:func:`~.storage.write_runs`,
through the caller's ``save``), so the whole experiment is never held in memory, and the progress
folder is removed. The progress folder is marked as ours like every temporary folder
(:mod:`tempo_lens.io.atomic`) and held under its lock while the run goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..capture import CapturedRun
from ..errors import ExperimentFileError
from ..io.atomic import folder_lock, is_ours, owned_marker
from ..models.identity import fingerprint_of
from ..models.loading import load_model
from .budget import check_run_count
from .config import ExperimentConfig
from .loading import load_experiment
from .runner import run_experiment, shard_indices
from .storage import Experiment, intact_metadata, is_experiment_folder, save_experiment

if TYPE_CHECKING:
    from ..backends.base import BackendName

STREAM_ABOVE = 64  # prompts: a run of more is streamed to disk in chunks
CHUNK_PROMPTS = 64
ModelSource = Callable[[], Any]  # the loaded model; called only when a chunk must be generated
SaveRuns = Callable[[Experiment, Iterable[list[CapturedRun]]], Path]  # (header, runs chunk by chunk) -> where written


def progress_folder(
    target: Path, config: ExperimentConfig, shard: tuple[int, int] | None, backend: BackendName = "bridge"
) -> Path:
    """Where the finished chunks of this experiment (config, model and its fingerprint, dtype, backend, shard) into
    ``target`` are kept: new weights under the same model name start a new progress folder."""
    identity = [config.to_dict(), config.model, config.dtype, backend, shard, fingerprint_of(config.model)]
    key = json.dumps(identity, sort_keys=True, default=str)
    return target.with_name(f".{target.name}.partial-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:12]}")


def check_progress_folder(folder: Path) -> None:
    """Refuse a progress folder this program did not make (a link, or a folder without our marker): never written into."""
    if (folder.exists() or folder.is_symlink()) and not is_ours(folder):
        raise ExperimentFileError(f"{folder} exists and was not made by tempo-lens; move it away, then run again")


def _chunks(indices: list[int]) -> list[list[int]]:
    return [indices[k : k + CHUNK_PROMPTS] for k in range(0, len(indices), CHUNK_PROMPTS)]


def run_streamed(
    config: ExperimentConfig,
    target: Path,
    save: SaveRuns,
    *,
    progress: Callable[[str], None],
    shard: tuple[int, int] | None = None,
    model: ModelSource | None = None,
    allow_large: bool = False,
    backend: BackendName = "bridge",
) -> Path:
    """Run ``config`` chunk by chunk beside ``target`` (resuming finished chunks), then combine them through ``save``.

    ``save(header, groups)`` writes the experiment into ``target`` and returns where (``run``:
    :func:`~.storage.save_runs` with its overwrite checks; ``analyze``: its output plan). ``model``
    gives the loaded model (default: the config's model, loaded as ``backend`` when first needed).
    """
    indices = shard_indices(len(config.prompts), shard)
    check_run_count(config, allow_large, n_prompts=len(indices))
    folder = progress_folder(target, config, shard, backend)
    check_progress_folder(folder)
    remove_orphans(target, folder, progress)
    folder.mkdir(parents=True, exist_ok=True)
    owned_marker(folder)
    chunks = _chunks(indices)
    loaded = model or model_on_first_use(config.model, config.dtype, backend)
    with folder_lock(folder, wait_s=1.0):
        for k, chunk in enumerate(chunks):
            part = folder / f"chunk-{k:05d}"
            if kept_chunk(part, folder, progress):
                progress(f"{config.name}: chunk {k + 1}/{len(chunks)} was finished by an earlier run; kept")
                continue
            progress(f"{config.name}: chunk {k + 1}/{len(chunks)} ({len(chunk)} prompts)")
            experiment = run_experiment(config, loaded(), shard=shard, progress=progress, allow_large=True, prompt_indices=chunk)
            save_experiment(experiment, part, overwrite=True)
            del experiment  # one chunk in memory at a time
        parts = [folder / f"chunk-{k:05d}" for k in range(len(chunks))]
        header = dataclasses.replace(_load_chunk(parts[0], folder), runs=[])  # its facts only: the runs come chunk by chunk
        path = save(header, _groups(parts, header, folder))
    shutil.rmtree(folder, ignore_errors=True)
    return path


def kept_chunk(part: Path, folder: Path, progress: Callable[[str], None]) -> bool:
    """Whether the finished chunk ``part`` is intact (metadata and arrays match their checksums) and can be kept.

    A damaged chunk (a file truncated, edited or missing) is removed so that it is generated again; a chunk
    that is not a folder of ours (a link, foreign files) is never removed: the refusal names the folder to delete.
    """
    if not (part.exists() or part.is_symlink()):
        return False
    if part.is_symlink() or not is_experiment_folder(part):
        raise ExperimentFileError(
            f"{part} holds files tempo-lens did not write; delete the progress folder {folder} and run again"
        )
    if intact_metadata(part) is not None:
        return True
    progress(f"{part.name} of {folder.name} is damaged (its files do not match their checksums); generating it again")
    shutil.rmtree(part)
    return False


def remove_orphans(target: Path, folder: Path, progress: Callable[[str], None]) -> None:
    """Remove the progress folders of ``target`` left by runs of other prompts or settings (``folder`` is this run's).

    Only folders of ours (marked) that no process holds are removed: their chunks can never be resumed by this
    config, and a later run of the old one would generate them again.
    """
    prefix = f".{target.name}.partial-"
    if not target.parent.is_dir():
        return
    for other in sorted(target.parent.iterdir()):
        if other == folder or not other.name.startswith(prefix) or not is_ours(other):
            continue
        try:
            with folder_lock(other, wait_s=0):
                shutil.rmtree(other)
        except ExperimentFileError:
            continue  # a run of those settings is still going on
        progress(f"removed {other.name}: the unfinished progress of an earlier run of other prompts or settings into {target}")


def _load_chunk(part: Path, folder: Path) -> Experiment:
    """A finished chunk, or a refusal naming the progress folder to delete (it was damaged after it was checked)."""
    try:
        return load_experiment(part)
    except ExperimentFileError as exc:
        raise ExperimentFileError(f"{exc} [in {part}: delete the progress folder {folder} and run again]") from None


def model_on_first_use(
    name: str | None, dtype: str | None, backend: BackendName, announce: Callable[[], None] | None = None
) -> ModelSource:
    """The model ``name``/``dtype`` as ``backend``, loaded on the first call (after ``announce``) and kept for the next."""
    held: list[Any] = []

    def model() -> Any:
        if not held:
            if announce is not None:
                announce()
            held.append(load_model(name, dtype=dtype, backend=backend))
        return held[0]

    return model


def _groups(parts: list[Path], header: Experiment, folder: Path) -> Iterator[list[CapturedRun]]:
    """Each chunk's runs, loaded one chunk at a time; a chunk of another config or model is refused."""
    for part in parts:
        experiment = _load_chunk(part, folder)
        if (experiment.config, experiment.model, experiment.shard) != (header.config, header.model, header.shard):
            raise ExperimentFileError(
                f"{part} holds another config or model than {parts[0].name}; remove {part.parent} and run again"
            )
        yield experiment.runs
