"""The knock-out step of ``analyze`` and the study: while the model is loaded, replay a multi-prompt experiment's runs.

The report is built from saved files only, and the knock-out needs the model, so it is computed right after
a multi-prompt config's runs are saved (or kept from an earlier analyze) and written beside them as
``knockout.json`` (:mod:`tempo_lens.analysis.knockout_store`). A file computed from the same runs and
settings is kept; anything else is recomputed. Its cost is one batched replay per (step, arm) and layer
block, printed in the progress lines.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..analysis.knockout_store import (
    DEFAULT_BLOCKS,
    experiment_digest,
    knockout_experiment,
    knockout_settings,
    read_knockout,
    sample_prompts,
    save_knockout,
)
from ..analysis.metrics.inputs import MULTI, config_role
from ..experiment import ExperimentConfig, load_experiment
from ..io.atomic import fingerprint
from .outputs import OutputPlan

Progress = Callable[[str], None]


def ensure_knockout(
    name: str,
    folder: Path,
    model: Callable[[], Any],
    progress: Progress,
    plan: OutputPlan | None = None,
    sample: int | None = None,
) -> None:
    """Compute and save the knock-out of the experiment in ``folder`` unless an intact one of the same runs is there.

    ``sample``: replay the runs of that many prompts, spread evenly over the prompt set (:func:`sample_prompts`);
    None: every run."""
    digest = experiment_digest(folder)
    if digest is None:
        progress(f"{name}: knock-out skipped: {folder} has no readable metadata")
        return
    experiment = load_experiment(folder, lazy=True)
    prompts = None if sample is None else sample_prompts(len(experiment.config.get("prompts") or []), sample)
    record, _ = read_knockout(folder, digest)
    settings = knockout_settings(experiment, prompts)
    if record is not None and record.settings == settings and set(record.layers) == set(DEFAULT_BLOCKS):
        progress(f"{name}: kept the knock-out in {folder / 'knockout.json'} (same runs and settings)")
        return
    n_runs = len(experiment.generated()) if prompts is None else f"the runs of {len(prompts)} prompts spread over the set"
    progress(
        f"{name}: knock-out: replaying every step with earlier parallel keys ({n_runs}; "
        f"parallel, matched and sink arms; layer blocks {', '.join(DEFAULT_BLOCKS)}; batched)"
    )
    record = knockout_experiment(model(), experiment, digest, progress=progress, prompts=prompts)
    path = save_knockout(folder, record)
    if plan is not None and folder in plan.seen:  # the folder now holds one more file of ours
        plan.seen[folder] = fingerprint(folder)
    progress(
        f"{name}: knock-out took {record.seconds:.1f} s ({record.cpu_seconds or 0:.1f} s of CPU; {record.n_forwards} batched "
        f"forwards), saved to {path}"
    )


def knockout_if_multi(
    name: str,
    config: ExperimentConfig,
    folder: Path,
    model: Callable[[], Any],
    progress: Progress,
    plan: OutputPlan | None = None,
    sample: int | None = None,
) -> None:
    """:func:`ensure_knockout` for a multi-prompt config (the report's multi-prompt section reads it); others are left."""
    if config_role(config.to_dict()) == MULTI:
        ensure_knockout(name, folder, model, progress, plan, sample)
