"""``make study``: a folder's configs on every installed zoo model, with an up-front time estimate and progress.

The study folder (``analyses/study``) holds the single-prompt pair and a multi-prompt config over the
study's prompt set (``docs/study.md``). For each model the configs run into ``FOLDER/models/NAME``
(each model loaded once; the multi-prompt config in chunks of prompts, so progress and the time left
show as it goes), and each model gets its own report. ``FOLDER/report`` is then the default model's
report (its metrics, not recomputed) with the Cross-model section over every model.

Usage: ``python -m tempo_lens.report.study FOLDER [--models a,b] [--chunks N]`` (``make study``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import ConfigError, TempoLensError
from ..experiment import ExperimentConfig, run_experiment
from ..experiment.shards import merge_experiments
from .cross_model import collect_entries, folder_name
from .inputs import MULTI, SINGLE, check_pair, config_role
from .outputs import OutputPlan
from .pipeline import build_report, find_configs, write_report
from .schema import read_metrics

Progress = Callable[[str], None]

# Measured by `make study` on the 2-core CPU machine this project is developed on, SmolLM2-135M, three other jobs
# sharing the CPU (README): seconds per generated run of 10 steps with batch 8, and per run for the model's report.
# Other zoo models are scaled by their measured speed relative to it (README, `make analyze-models`: seconds per
# model on the 14-prompt set, conversion left out); other models by parameter count. An estimate, and said so.
SECONDS_PER_RUN = 1.3
REPORT_SECONDS_PER_RUN = 0.5
RELATIVE_COST = {"smollm2-135m": 1.0, "qwen2.5-0.5b": 2.2, "qwen2.5-1.5b": 6.1, "gemma-3-270m": 1.6}
REFERENCE_PARAMS = 135e6
DEFAULT_CHUNKS = 8


def installed_zoo_models() -> list[str]:
    """The zoo models whose parts are installed, in zoo order (the default model is always usable)."""
    from ..zoo import DEFAULT_MODEL, ZOO, is_installed

    return [name for name, model in ZOO.items() if name == DEFAULT_MODEL or is_installed(model)]


def n_runs(config: ExperimentConfig) -> int:
    """Generated runs plus control replays of one config (a replay is counted as a run: an upper bound)."""
    return len(config.prompts) * len(config.modes) * (1 + len(config.controls))


def estimate_seconds(configs: Sequence[ExperimentConfig], model: str) -> float:
    """Seconds the configs should take on ``model`` on this machine class (see :data:`RELATIVE_COST`)."""
    from ..zoo import ZOO

    params = ZOO[model].params if model in ZOO else REFERENCE_PARAMS
    cost = RELATIVE_COST.get(model, max(1.0, params / REFERENCE_PARAMS))
    per_run = SECONDS_PER_RUN * cost + REPORT_SECONDS_PER_RUN
    return per_run * sum(n_runs(c) for c in configs)


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _run_chunked(config: ExperimentConfig, model, n_chunks: int, progress: Progress, label: str):
    """The config's prompts in ``n_chunks`` shards (one model load), merged back into one experiment."""
    if config_role(config.to_dict()) != MULTI or n_chunks <= 1:
        return run_experiment(config, model)
    n_chunks = min(n_chunks, len(config.prompts))
    parts, started = [], time.perf_counter()
    for i in range(n_chunks):
        parts.append(run_experiment(config, model, shard=(i, n_chunks)))
        elapsed = time.perf_counter() - started
        left = elapsed / (i + 1) * (n_chunks - i - 1)
        progress(f"{label}: {config.name} chunk {i + 1}/{n_chunks} done, {minutes(elapsed)} so far, about {minutes(left)} left")
    merged = merge_experiments(parts)
    merged.shard = None
    return merged


def run_model(
    configs: dict[str, ExperimentConfig], name: str, plan: OutputPlan, n_chunks: int, progress: Progress, dtype: str | None = None
) -> dict[str, Path]:
    """Every config on one model (loaded once, on the GPU when there is one), saved through ``plan``."""
    from ..model import load_model

    dtype = dtype or next(iter(configs.values())).dtype
    progress(f"{name}: loading")
    model = load_model(name, dtype=dtype)
    n_params = int(sum({p.data_ptr(): p.numel() for p in model.parameters()}.values()))
    out = {}
    try:
        for config_name, config in configs.items():
            config = dataclasses.replace(config, model=name, dtype=dtype)
            began = time.perf_counter()
            experiment = _run_chunked(config, model, n_chunks, progress, name)
            experiment.model["n_params"] = n_params
            out[config_name] = plan.save_run(experiment, config_name)
            progress(f"{name}: {config_name}: {len(experiment.runs)} runs in {minutes(time.perf_counter() - began)}")
    finally:
        del model
        gc.collect()
    return out


def study(
    folder: Path,
    models: list[str] | None = None,
    n_chunks: int = DEFAULT_CHUNKS,
    progress: Progress = print,
    overwrite: bool = False,
    dtype: str | None = None,
) -> Path:
    """Run the study folder on each model (default: every installed zoo model) and write every report."""
    from ..zoo import DEFAULT_MODEL

    started = time.perf_counter()
    folder = Path(folder)
    configs = {n: c for n, c in find_configs(folder).items() if config_role(c.to_dict()) in (SINGLE, MULTI)}
    if not configs:
        raise ConfigError(f"{folder} has no single-prompt or multi-prompt configs (*.toml) for a study")
    check_pair({n: c.to_dict() for n, c in configs.items()})
    names = models or installed_zoo_models()
    plans = {name: OutputPlan(folder / "models" / folder_name(name), overwrite) for name in names}
    for plan in plans.values():
        plan.check(list(configs))
    main_plan = OutputPlan(folder, overwrite)
    main_plan.check()
    prompts = sum(len(c.prompts) for c in configs.values() if config_role(c.to_dict()) == MULTI)
    estimates = {name: estimate_seconds(list(configs.values()), name) for name in names}
    progress(
        f"study: {prompts} prompts x {', '.join(sorted({m for c in configs.values() for m in c.modes}))} on "
        f"{len(names)} model(s): {', '.join(names)}"
    )
    progress(
        "estimated time on a 2-core CPU: "
        + ", ".join(f"{n} {minutes(s)}" for n, s in estimates.items())
        + f"; about {minutes(sum(estimates.values()))} in all, reports included"
    )
    done: dict[str, dict[str, Path]] = {}
    for i, name in enumerate(names, start=1):
        began = time.perf_counter()
        progress(f"model {i}/{len(names)}: {name} (estimated {minutes(estimates[name])})")
        try:
            done[name] = run_model(configs, name, plans[name], n_chunks, progress, dtype)
        except TempoLensError as exc:
            progress(f"skipping model {name}: {exc}")
            continue
        build_report(done[name], plans[name], progress)
        progress(
            f"model {name}: report in {plans[name].report_dir} ({minutes(time.perf_counter() - began)}; "
            f"{minutes(time.perf_counter() - started)} since the start)"
        )
    main = DEFAULT_MODEL if DEFAULT_MODEL in done else next(iter(done), None)
    if main is None:
        raise ConfigError("no model of the study could run; see the messages above")
    # the main report is that model's metrics with the Cross-model section added: nothing is computed twice
    metrics = read_metrics(plans[main].report_dir / "metrics.json")
    metrics.cross_model = collect_entries(folder / "models", progress)
    target = write_report(metrics, main_plan)
    progress(
        f"wrote {target / 'FINDINGS.md'} with the Cross-model section; the study took {minutes(time.perf_counter() - started)}"
    )
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tempo_lens.report.study", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the study folder (configs and prompts), e.g. analyses/study")
    parser.add_argument("--models", default="", help="comma-separated model names (default: every installed zoo model)")
    parser.add_argument(
        "--chunks", type=int, default=DEFAULT_CHUNKS, help="pieces the prompt set is run in (progress after each)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace run folders and reports analyze did not write")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="model dtype (default: the configs' own, else float32); bfloat16 for a big model on a GPU",
    )
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()] or None
    try:
        study(
            args.folder,
            models,
            args.chunks,
            progress=lambda m: print(f"[study] {m}", flush=True),
            overwrite=args.overwrite,
            dtype=args.dtype,
        )
    except TempoLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
