"""The knock-out of a saved experiment, kept beside its runs: computed once with the model, read without it.

:func:`knockout_experiment` replays every generated run of an experiment (:func:`~.knockout.knockout_run`,
every arm, on every layer block) and returns a :class:`KnockoutFile`; :func:`save_knockout` writes it as
``knockout.json`` in the experiment folder (atomically, with a checksum of its own content and the
checksum of the experiment it was computed from); :func:`read_knockout` reads it back, or says why it
cannot be used (absent: the knock-out was not run; damaged; made from other runs or other settings).
The report reads only this file, so it is built from saved files alone.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExperimentFileError, InvalidInputError
from ..experiment import METADATA, Experiment
from ..experiment.storage import KNOCKOUT, SHARD_NAME
from ..io.atomic import folder_lock, write_files
from ..io.records import clean, read_json, read_record

KIND = "tempo_lens.knockout"
FORMAT_VERSION = 1
FIX = "run `tempo-lens analyze` again with the model (it recomputes the knock-out)"
DEFAULT_BLOCKS = ("all", "early", "middle", "late")


@dataclass
class KnockoutStepRecord:
    """One arm at one step on one layer block (:class:`~.knockout.StepKnockout`); ``kl`` None when not finite."""

    step: int
    arm: str
    n_keys: int
    kl: float | None
    kept_changed: bool
    distance_gap: float = 0.0


@dataclass
class RunKnockoutRecord:
    run: str
    mode: str
    prompt_index: int | None
    blocks: dict[str, list[KnockoutStepRecord]]


@dataclass
class KnockoutFile:
    """``knockout.json``: every run's per-step knock-out, per block, and what it was computed from."""

    kind: str
    format_version: int
    experiment_sha256: str
    seed: int
    layers: dict[str, list[int]]  # the layers of each block
    seconds: float  # the time the replays took
    n_forwards: int
    runs: list[RunKnockoutRecord]
    record_sha256: str = ""
    cpu_seconds: float | None = None  # this process's CPU time over the replays (the wall time depends on what else runs)
    settings: dict[str, Any] = field(default_factory=dict)  # threshold, max_parallel, next_token_source


def experiment_digest(folder: Path) -> str | None:
    """The experiment's identity: the checksum its metadata records (of every shard's, for a folder of shards)."""
    folders = [folder] if (folder / METADATA).is_file() else sorted(p for p in folder.iterdir() if SHARD_NAME.fullmatch(p.name))
    digests = []
    for part in folders:
        try:
            data = read_json(part / METADATA, METADATA, FIX)
        except (ExperimentFileError, OSError):
            return None
        digest = data.get("metadata_sha256") if isinstance(data, dict) else None
        if not isinstance(digest, str):
            return None
        digests.append(digest)
    if not digests:
        return None
    return digests[0] if len(digests) == 1 else hashlib.sha256("\n".join(digests).encode("ascii")).hexdigest()


def _digest(data: dict) -> str:
    content = {k: v for k, v in data.items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def knockout_settings(experiment: Experiment, prompts: Sequence[int] | None = None) -> dict[str, Any]:
    """The generation settings the knock-out judges the kept set by (from the experiment's config), and which
    prompts' runs it replays (``prompts``: their indices; None: every run)."""
    config = experiment.config
    settings: dict[str, Any] = {
        "threshold": float(config["threshold"]),
        "max_parallel": int(config["max_parallel"]),
        "next_token_source": str(config.get("next_token_source", "mixture")),
    }
    if prompts is not None:
        settings["prompts"] = sorted(int(i) for i in prompts)
    return settings


def sample_prompts(n_prompts: int, n_sample: int) -> list[int]:
    """``n_sample`` prompt indices spread evenly over ``n_prompts`` (every one when ``n_sample`` covers them all).

    Evenly spaced, so a prompt set written in blocks of one genre each gives every genre its share.
    """
    if n_sample < 1:
        raise InvalidInputError(f"a knock-out sample needs at least one prompt, got {n_sample}")
    if n_sample >= n_prompts:
        return list(range(n_prompts))
    return sorted({(i * n_prompts) // n_sample for i in range(n_sample)})


def knockout_experiment(
    model: Any,
    experiment: Experiment,
    experiment_sha256: str,
    blocks: Sequence[str] = DEFAULT_BLOCKS,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    prompts: Sequence[int] | None = None,
) -> KnockoutFile:
    """Every generated run of ``experiment`` knocked out on every block of ``blocks``: one unablated forward per run
    fills a KV cache, then each batch of (step, arm, block) rows feeds only its steps' siblings after it.
    ``prompts``: replay only the runs of these prompt indices (a study's sample); None: every run."""
    from .knockout import BATCH_ROWS, knockout_blocks, layer_blocks  # deferred: torch

    settings = knockout_settings(experiment, prompts)
    generation = {k: v for k, v in settings.items() if k != "prompts"}
    started, cpu_started = time.perf_counter(), time.process_time()
    runs, forwards = [], 0
    generated = experiment.generated()
    if prompts is not None:
        chosen = set(prompts)
        generated = [run for run in generated if run.meta.get("prompt_index") in chosen]
    for i, run in enumerate(generated):
        records = knockout_blocks(model, run.layout, run.mode, blocks=tuple(blocks), seed=seed, **generation)  # type: ignore[arg-type]
        n_rows = len(records)
        forwards += (1 + -(-n_rows // BATCH_ROWS)) if n_rows else 0  # the baseline, then the batches of rows
        by_block: dict[str, list[KnockoutStepRecord]] = {block: [] for block in blocks}
        for s in records:
            by_block[s.block].append(KnockoutStepRecord(s.step, s.arm, s.n_keys, s.kl, s.kept_changed, s.distance_gap))
        index = run.meta.get("prompt_index")
        runs.append(RunKnockoutRecord(run.name, run.mode, index if isinstance(index, int) else None, by_block))
        if progress is not None and (i + 1) % 8 == 0:
            progress(f"knock-out: {i + 1}/{len(generated)} runs ({time.perf_counter() - started:.1f} s)")
    all_layers = layer_blocks(int(model.cfg.n_layers))
    return KnockoutFile(
        kind=KIND,
        format_version=FORMAT_VERSION,
        experiment_sha256=experiment_sha256,
        seed=seed,
        layers={b: all_layers[b] for b in blocks},  # type: ignore[index]
        seconds=time.perf_counter() - started,
        n_forwards=forwards,
        runs=runs,
        settings=settings,
        cpu_seconds=time.process_time() - cpu_started,
    )


def save_knockout(folder: Path, record: KnockoutFile) -> Path:
    """Write ``record`` as ``folder/knockout.json`` atomically (under the lock experiment writes take), with its checksum."""
    data = clean(record)
    data["record_sha256"] = _digest(data)
    with folder_lock(folder.parent):
        write_files(folder, {KNOCKOUT: json.dumps(data).encode("utf-8")})
    return folder / KNOCKOUT


def read_knockout(folder: Path, experiment_sha256: str | None = None) -> tuple[KnockoutFile | None, str]:
    """The knock-out saved in ``folder`` and ``""``, or None and why it is not used.

    ``experiment_sha256``: when given, a file computed from other runs (the experiment was run again) is not used.
    """
    path = folder / KNOCKOUT
    if not path.is_file():
        return None, "not run (no knockout.json beside the runs: they were saved without the model's replays)"
    try:
        record, raw = read_record(KnockoutFile, path, "knock-out file", FIX)
    except ExperimentFileError as exc:
        return None, f"not used: {exc}"
    if record.kind != KIND or record.format_version != FORMAT_VERSION:
        return None, f"not used: {path} is not a knock-out file of format {FORMAT_VERSION}; {FIX}"
    if record.record_sha256 != _digest(raw):
        return None, f"not used: {path} does not match its own checksum (edited or damaged); {FIX}"
    if experiment_sha256 is not None and record.experiment_sha256 != experiment_sha256:
        return None, f"not used: {path} was computed from other runs than those saved beside it; {FIX}"
    return record, ""
