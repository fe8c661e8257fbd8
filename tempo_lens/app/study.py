"""``make study``: a folder's configs on every installed zoo model, with an up-front time estimate and progress.

The study folder (``analyses/study``) holds the single-prompt pair and a multi-prompt config over the
study's prompt set (``docs/study.md``). For each model the configs run into ``FOLDER/models/NAME``
(each model loaded once; the multi-prompt config in chunks of prompts, so progress and the time left
show as it goes), and each model gets its own report. ``FOLDER/report`` is then the default model's
report (its metrics, not recomputed) with the Cross-model section over every model.

Usage: ``python -m tempo_lens.app.study FOLDER [--models a,b] [--chunks N]`` (``make study``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..analysis.metrics.cross_model import collect_entries, model_folders
from ..analysis.metrics.inputs import MULTI, SINGLE, check_pair, config_role
from ..analysis.metrics.schema import read_metrics
from ..backends import backend_for
from ..errors import ConfigError, TempoLensError
from ..experiment import Experiment, ExperimentConfig, run_experiment
from ..experiment.stream import model_on_first_use
from ..generation.memory import default_batch_size
from ..io.signals import Terminated, interrupts_raise
from ..models.cache import cache_problem, cache_root
from ..models.zoo import DEFAULT_MODEL, ZOO, is_installed
from .analyze import build_report, find_configs, write_report
from .knockout import knockout_if_multi
from .outputs import OutputPlan
from .study_results import results_page, write_results

if TYPE_CHECKING:
    from ..backends.base import BackendName

Progress = Callable[[str], None]

# Measured on the 2-core CPU machine this project is developed on while another job held one of the two cores, so the
# runner had one (docs/study.md, "Time"; an upper estimate for a quiet machine): seconds per generated run (10 steps,
# batch 16) on SmolLM2-135M in a full `make study`, and per run for a model's report (saving the runs, loading them
# back, the metrics, rendering). Other zoo models' generation is scaled by its CPU time per run relative to
# SmolLM2-135M's on 31 prompts of the set, other models by parameter count. Loading each model is added per model,
# and converting a zoo model on its first load (qwen2.5-1.5b measured here under load; the others quiet, README).
# These are the defaults of :class:`StudyTiming`; a study on another machine class passes its own.


@dataclass(frozen=True)
class StudyTiming:
    """What the up-front time estimate assumes: one machine class's measured seconds (the defaults: see above)."""

    seconds_per_run: float = 0.32
    report_seconds_per_run: float = 0.04
    knockout_seconds_per_run: float = 0.15  # per knocked-out run (SmolLM2, quiet, 2 threads), scaled like generation
    relative_cost: Mapping[str, float] = field(
        default_factory=lambda: {"smollm2-135m": 1.0, "qwen2.5-0.5b": 2.9, "qwen2.5-1.5b": 7.5, "gemma-3-270m": 1.6}
    )
    reference_params: float = 135e6
    load_seconds: Mapping[str, float] = field(
        default_factory=lambda: {"smollm2-135m": 8, "qwen2.5-0.5b": 7, "qwen2.5-1.5b": 18, "gemma-3-270m": 12}
    )
    conversion_seconds: Mapping[str, float] = field(
        default_factory=lambda: {"smollm2-135m": 18, "qwen2.5-0.5b": 64, "qwen2.5-1.5b": 201, "gemma-3-270m": 63}
    )


DEFAULT_CHUNKS = 8
# The knock-out replays every run by default (None); a number replays the runs of that many prompts, spread evenly
# over the set, for a model too large to replay them all. Only steps with a matched control are fed again (the summary
# reads no others): on the study's prompts 5-17 % of the steps with earlier parallel keys (docs/study.md, "Time").
KNOCKOUT_PROMPTS: int | None = None


def installed_zoo_models() -> list[str]:
    """The zoo models whose parts are installed, in zoo order (the default model is always usable)."""
    return [name for name, model in ZOO.items() if name == DEFAULT_MODEL or is_installed(model)]


def n_runs(config: ExperimentConfig) -> int:
    """Generated runs plus control replays of one config (a replay is counted as a run: an upper bound)."""
    return len(config.prompts) * len(config.modes) * (1 + len(config.controls))


def knockout_runs(config: ExperimentConfig, knockout_prompts: int | None) -> int:
    """Runs the knock-out replays for one config: a multi-prompt config's runs of the sampled prompts (None: all)."""
    if config_role(config.to_dict()) != MULTI:
        return 0
    prompts = len(config.prompts) if knockout_prompts is None else min(knockout_prompts, len(config.prompts))
    return prompts * len(config.modes)


def estimate_seconds(
    configs: Sequence[ExperimentConfig],
    model: str,
    timing: StudyTiming = StudyTiming(),
    knockout_prompts: int | None = 0,
) -> float:
    """Seconds the configs should take on ``model`` on the machine class ``timing`` was measured on, with the knock-out
    of ``knockout_prompts`` prompts' runs (0: none; None: every run)."""
    params = ZOO[model].params if model in ZOO else timing.reference_params
    cost = timing.relative_cost.get(model, max(1.0, params / timing.reference_params))
    per_run = timing.seconds_per_run * cost + timing.report_seconds_per_run
    knocked = 0 if knockout_prompts == 0 else sum(knockout_runs(c, knockout_prompts) for c in configs)
    return per_run * sum(n_runs(c) for c in configs) + timing.knockout_seconds_per_run * cost * knocked


def setup_seconds(model: str, timing: StudyTiming = StudyTiming()) -> float:
    """Seconds to load ``model``, plus its conversion when it is a zoo model not converted yet (its first load converts it)."""
    slowest = float(max(timing.load_seconds.values()))
    if model not in ZOO:
        return slowest
    converted = cache_problem(cache_root() / ZOO[model].cache_name) is None
    return timing.load_seconds.get(model, slowest) + (0 if converted else timing.conversion_seconds.get(model, 0))


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def batch_size(config: ExperimentConfig, model) -> int:
    """The config's batch size, else the one ``generate_batch`` chooses for its longest prompt (free memory, at most 16)."""
    if config.batch_size:
        return config.batch_size

    longest = max(len(model.tokenizer(p)["input_ids"]) for p in config.prompts)
    return default_batch_size(backend_for(model), longest, config.generation.max_steps, config.generation.max_parallel)


def prompt_chunks(n_prompts: int, batch: int, n_chunks: int) -> list[range]:
    """About ``n_chunks`` consecutive pieces of the prompts, each a whole number of batches (the last may fall short)."""
    size = batch * max(1, -(-n_prompts // (batch * max(1, n_chunks))))
    return [range(first, min(first + size, n_prompts)) for first in range(0, n_prompts, size)]


def _run_chunked(config: ExperimentConfig, model, n_chunks: int, progress: Progress, label: str) -> Experiment:
    """The config's prompts in about ``n_chunks`` pieces of whole batches (one model load), joined back into one experiment.

    Each piece is consecutive prompts, so every batch but the last is full and the joined runs are in the order one
    run of the whole config gives them.
    """
    if config_role(config.to_dict()) != MULTI or n_chunks <= 1:
        return run_experiment(config, model)
    config = dataclasses.replace(config, batch_size=batch_size(config, model))
    chunks = prompt_chunks(len(config.prompts), config.batch_size or 1, n_chunks)
    parts, started = [], time.perf_counter()
    for i, chunk in enumerate(chunks):
        parts.append(run_experiment(config, model, prompt_indices=list(chunk)))
        elapsed = time.perf_counter() - started
        left = elapsed / chunk.stop * (len(config.prompts) - chunk.stop)
        progress(
            f"{label}: {config.name} chunk {i + 1}/{len(chunks)} done (batch {config.batch_size}), {minutes(elapsed)} so far, "
            f"about {minutes(left)} left"
        )
    first = parts[0]
    return Experiment(config=first.config, runs=[r for p in parts for r in p.runs], model=first.model, versions=first.versions)


def run_model(
    configs: dict[str, ExperimentConfig],
    name: str,
    plan: OutputPlan,
    n_chunks: int,
    progress: Progress,
    dtype: str | None = None,
    backend: BackendName = "bridge",
    knockout: bool = True,
    knockout_prompts: int | None = KNOCKOUT_PROMPTS,
) -> dict[str, Path]:
    """Every config on one model (loaded once, on the GPU when there is one, and only when a config has runs to make),
    saved through ``plan``; a config whose runs an earlier study finished with the same model files, settings and
    prompts is kept (``analyze``'s resume, :meth:`~.outputs.OutputPlan.finished_run`). ``knockout``: the multi-prompt
    runs' knock-out too, while the model is loaded (:mod:`.knockout`), on the runs of ``knockout_prompts`` prompts
    (None: every run)."""

    dtype = dtype or next(iter(configs.values())).dtype
    model = model_on_first_use(name, dtype, backend, announce=lambda: progress(f"{name}: loading"))
    out = {}
    try:
        for config_name, config in configs.items():
            config = dataclasses.replace(config, model=name, dtype=dtype)
            done = plan.finished_run(config_name, config, backend, automatic_batch=True)
            if done is not None:
                progress(
                    f"{name}: {config_name}: kept the runs in {done}, finished earlier with the same model, settings and prompts"
                )
                out[config_name] = done
                continue
            began = time.perf_counter()
            experiment = _run_chunked(config, model(), n_chunks, progress, name)
            out[config_name] = plan.save_run(experiment, config_name)
            if knockout:
                knockout_if_multi(config_name, config, out[config_name], model, progress, plan, knockout_prompts)
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
    knockout: bool = True,
    knockout_prompts: int | None = KNOCKOUT_PROMPTS,
    results: Path | None = None,
) -> Path:
    """Run the study folder on each model (default: every installed zoo model) and write every report
    (``knockout``: with the knock-out of the multi-prompt runs of ``knockout_prompts`` prompts, None: of every run;
    ``results``: also the outcome page there, :mod:`.study_results`)."""
    started = time.perf_counter()
    folder = Path(folder)
    configs = {n: c for n, c in find_configs(folder).items() if config_role(c.to_dict()) in (SINGLE, MULTI)}
    if not configs:
        raise ConfigError(f"{folder} has no single-prompt or multi-prompt configs (*.toml) for a study")
    check_pair({n: c.to_dict() for n, c in configs.items()})
    names = list(dict.fromkeys(models or installed_zoo_models()))  # each model once
    # one folder per model, also for two models of one base name (/x/a and /y/a), each recording its model
    plans = {name: OutputPlan(folder / "models" / sub, overwrite, model=name) for name, sub in model_folders(names).items()}
    for plan in plans.values():
        plan.check(list(configs))
    main_plan = OutputPlan(folder, overwrite)
    main_plan.check()
    prompts = sum(len(c.prompts) for c in configs.values() if config_role(c.to_dict()) == MULTI)
    sample = (knockout_prompts if knockout_prompts else None) if knockout else 0
    estimates = {
        name: setup_seconds(name) + estimate_seconds(list(configs.values()), name, knockout_prompts=sample) for name in names
    }
    progress(
        f"study: {prompts} prompts x {', '.join(sorted({m for c in configs.values() for m in c.modes}))} on "
        f"{len(names)} model(s): {', '.join(names)}"
    )
    progress(
        "estimated time on a 2-core CPU shared with one other job (less when nothing else runs): "
        + ", ".join(f"{n} {minutes(s)}" for n, s in estimates.items())
        + f"; about {minutes(sum(estimates.values()))} in all, loading, conversions and reports included"
    )
    done: dict[str, dict[str, Path]] = {}
    took_by_model: dict[str, float] = {}
    spent = planned = 0.0  # seconds taken and estimated by the models done
    for i, name in enumerate(names, start=1):
        began = time.perf_counter()
        progress(f"model {i}/{len(names)}: {name} (estimated {minutes(estimates[name])})")
        try:
            done[name] = run_model(
                configs, name, plans[name], n_chunks, progress, dtype, knockout=knockout, knockout_prompts=knockout_prompts
            )
        except TempoLensError as exc:
            progress(f"skipping model {name}: {exc}")
            continue
        build_report(done[name], plans[name], progress, expected={n: plans[name].manifest.runs.get(n) for n in done[name]})
        took = time.perf_counter() - began
        took_by_model[name] = took
        progress(
            f"model {name}: report in {plans[name].report_dir} ({minutes(took)}; "
            f"{minutes(time.perf_counter() - started)} since the start)"
        )
        spent, planned = spent + took, planned + estimates[name]
        if i < len(names):  # the estimate of the models left, at this machine's pace so far
            left = spent / planned * sum(estimates[n] for n in names[i:])
            progress(f"about {minutes(left)} left for the other models (so far {spent / planned:.2f} x the estimate)")
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
    if results is not None:
        multi = next(c for c in configs.values() if config_role(c.to_dict()) == MULTI)
        sampled = (
            "not run" if not knockout else (f"on the runs of {knockout_prompts} prompts" if knockout_prompts else "on every run")
        )
        settings = (
            f"{len(multi.prompts)} prompts x {', '.join(multi.modes)}, threshold {multi.generation.threshold}, "
            f"{multi.generation.max_steps} steps, every layer captured; knock-out {sampled} (every arm and layer block)"
        )
        page = results_page(
            folder,
            {name: plans[name].report_dir for name in done},
            target,
            took_by_model,
            time.perf_counter() - started,
            settings,
            Path(__file__).resolve().parents[2],
        )
        progress(f"wrote {write_results(Path(results), page)}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tempo_lens.app.study", description=__doc__.splitlines()[0])
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
    parser.add_argument("--results", type=Path, default=None, help="also write the outcome page here (docs/study-results.md)")
    parser.add_argument(
        "--no-knockout",
        action="store_true",
        help="skip the knock-out of each model's multi-prompt runs (the reports then say it was not run)",
    )
    parser.add_argument(
        "--knockout-prompts",
        type=int,
        default=0,
        help="the knock-out replays the runs of this many prompts, spread evenly over the set (default 0: every run)",
    )
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()] or None
    try:
        with interrupts_raise():  # Ctrl-C and SIGTERM end it with one line, after any write has removed its temporaries
            study(
                args.folder,
                models,
                args.chunks,
                progress=lambda m: print(f"[study] {m}", flush=True),
                overwrite=args.overwrite,
                dtype=args.dtype,
                knockout=not args.no_knockout,
                knockout_prompts=args.knockout_prompts or None,
                results=args.results,
            )
    except TempoLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"{what}; the finished models' runs are kept and a rerun resumes after them", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
