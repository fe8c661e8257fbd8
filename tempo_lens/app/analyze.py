"""``tempo-lens analyze``: run a folder's experiment configs (or read its saved runs), then write the report.

- A folder with configs (``*.toml``, any names): every config runs on its own model (``--model``: one
  for all; each model is loaded once) into ``OUT/runs/NAME``, and the report is built only from those
  saved folders.
- A folder without configs but with saved experiments (``FOLDER/NAME`` or ``FOLDER/runs/NAME``): the
  report is built from them, no model needed.
- ``models=[...]`` (``make analyze-models``): the single-prompt and multi-prompt configs run on each
  model into ``FOLDER/models/NAME`` (models that cannot be loaded are skipped with their reason), then
  the main report is rebuilt from ``FOLDER/runs`` with the Cross-model section (the main runs are made
  first, on the default model, when the folder has none).

Which experiment feeds which section: :mod:`.inputs`. What may be overwritten: :mod:`.outputs`.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..analysis.metrics.comparable import check_comparable, check_fingerprints
from ..analysis.metrics.compute import compute_metrics
from ..analysis.metrics.cross_model import collect_entries, model_folders, zoo_names
from ..analysis.metrics.inputs import MULTI, PRUNING, SINGLE, check_pair, choose_inputs, config_role
from ..analysis.metrics.schema import metrics_json, parse_metrics
from ..errors import ConfigError, TempoLensError
from ..experiment import METADATA, ExperimentConfig, load_config, load_experiment, run_experiment, stream
from ..experiment.budget import check_run_count
from ..experiment.config import RESERVED_NAMES
from .knockout import knockout_if_multi
from .outputs import OutputPlan

if TYPE_CHECKING:
    from ..analysis.metrics.schema import Metrics
    from ..backends.base import BackendName
    from ..experiment import Experiment
    from ..experiment.stream import ModelSource

Progress = Callable[[str], None]


def find_configs(folder: Path) -> dict[str, ExperimentConfig]:
    """Every ``*.toml`` config directly in ``folder``, by experiment name (two configs may not share a name)."""
    configs: dict[str, ExperimentConfig] = {}
    for path in sorted(folder.glob("*.toml")):
        config = load_config(path)
        if config.name in configs:
            raise ConfigError(f"two configs in {folder} are both named {config.name!r}; give each experiment its own `name`")
        configs[config.name] = config
    return configs


def _is_experiment(path: Path) -> bool:
    return path.is_dir() and ((path / METADATA).is_file() or any(path.glob("shard-*-of-*")))


def find_saved(folder: Path) -> dict[str, Path]:
    """Saved experiment folders in ``folder/runs`` or directly in ``folder``, by folder name (the layout's own
    folders, ``report``, ``runs`` and ``models``, are never taken for experiments)."""
    for base in (folder / "runs", folder):
        found = (
            {p.name: p for p in sorted(base.iterdir()) if _is_experiment(p) and p.name not in RESERVED_NAMES}
            if base.is_dir()
            else {}
        )
        if found:
            return found
    return {}


def _select(configs: dict[str, ExperimentConfig], roles: tuple[str, ...]) -> dict[str, ExperimentConfig]:
    return {name: c for name, c in configs.items() if config_role(c.to_dict()) in roles}


def run_configs(
    configs: dict[str, ExperimentConfig],
    model_name: str | None,
    plan: OutputPlan,
    progress: Progress,
    dtype: str | None = None,
    backend: BackendName = "bridge",
    allow_large: bool = False,
) -> dict[str, Path]:
    """Run each config on its own model (``model_name``/``dtype``: one for all) into ``runs/NAME``, as it finishes.

    Configs are grouped by (model, dtype) so a model is loaded once however many configs use it (and
    only when one of them has runs to make), and freed before the next is loaded. A config whose runs
    an earlier analyze finished is kept (:meth:`~.outputs.OutputPlan.finished_run`); one of more than
    :data:`~tempo_lens.experiment.stream.STREAM_ABOVE` prompts is streamed to disk chunk by chunk and
    resumes after an interruption (:mod:`tempo_lens.experiment.stream`). Returns the saved folders by
    name, in the configs' order.
    """
    chosen = {
        name: dataclasses.replace(
            c, model=model_name or c.model, dtype=dtype or c.dtype, allow_large=c.allow_large or allow_large
        )
        for name, c in configs.items()
    }
    for name, config in chosen.items():  # before anything runs
        if _streamed(config):
            stream.check_progress_folder(stream.progress_folder(plan.run_folder(name), config, None, backend))
    groups: dict[tuple[str | None, str | None], list[str]] = {}
    for name, config in chosen.items():
        groups.setdefault((config.model, config.dtype), []).append(name)
    out = {}
    for (model_of_group, dtype_of_group), names in groups.items():
        announce = functools.partial(progress, f"loading model {model_of_group or 'SmolLM2-135M-Instruct (embedded default)'}")
        model = stream.model_on_first_use(model_of_group, dtype_of_group, backend, announce)
        try:
            for name in names:
                config = chosen[name]
                done = plan.finished_run(name, config, backend)
                if done is not None:
                    progress(f"{name}: kept the runs in {done}, finished earlier with the same model, settings and prompts")
                    out[name] = done
                    knockout_if_multi(name, config, done, model, progress, plan)  # the knock-out needs the model
                    continue
                started = time.perf_counter()
                out[name] = _run_config(config, name, model, plan, progress, backend)
                progress(f"{name}: runs saved to {out[name]} in {time.perf_counter() - started:.1f} s")
                knockout_if_multi(name, config, out[name], model, progress, plan)
        finally:
            del model
            gc.collect()
    return {name: out[name] for name in configs}


def _run_config(
    config: ExperimentConfig, name: str, model: ModelSource, plan: OutputPlan, progress: Progress, backend: BackendName
) -> Path:
    """Generate one config's runs into ``runs/NAME``: streamed chunk by chunk past one chunk of prompts, else at once."""
    if _streamed(config):
        return stream.run_streamed(
            config,
            plan.run_folder(name),
            lambda header, groups: plan.save_runs(header, groups, name),
            progress=progress,
            model=model,
            backend=backend,
        )
    return plan.save_run(run_experiment(config, model(), progress=progress), name)


def _streamed(config: ExperimentConfig) -> bool:
    return len(config.prompts) > stream.STREAM_ABOVE


def build_report(
    paths: dict[str, Path],
    plan: OutputPlan,
    progress: Progress,
    cross_model_dir: Path | None = None,
    expected: dict[str, str | None] | None = None,
) -> Path:
    """Compute the metrics from the saved experiments, render and write the report through ``plan``
    (:func:`read_saved`, :func:`report_metrics`, :func:`write_report`)."""
    return write_report(report_metrics(read_saved(paths, expected), progress, cross_model_dir), plan)


def read_saved(paths: dict[str, Path], expected: dict[str, str | None] | None = None) -> dict[str, Experiment]:
    """The saved experiments, loaded lazily: each captured step is read from disk when a metric uses it and not kept,
    so memory holds the steps in use and the metrics, not every run of the prompt set.

    ``expected``: the metadata checksum of each run folder this analyze wrote or kept; a folder replaced since
    (a concurrent ``run --overwrite``) is refused rather than reported.
    """
    experiments = {name: load_experiment(path, lazy=True) for name, path in paths.items()}  # each step read when used
    for name, experiment in experiments.items():  # what this analyze wrote is what it reads (no `run --overwrite` meanwhile)
        wanted = (expected or {}).get(name)
        if wanted is not None and experiment.digest != wanted:
            raise ConfigError(
                f"{paths[name]} was replaced by another process after this analyze wrote it; nothing was reported. "
                "Run analyze again (it regenerates or keeps the runs as they are now)"
            )
    return experiments


def report_metrics(experiments: dict[str, Experiment], progress: Progress, cross_model_dir: Path | None = None) -> Metrics:
    """The report's metrics from saved experiments of one model (each role filled by one experiment), with the
    Cross-model entries of ``cross_model_dir`` when given."""
    check_one_model(experiments)
    inputs = choose_inputs(experiments.values())
    unused = sorted(set(experiments) - inputs.used())
    if unused:
        progress(f"not used by the report (another experiment already fills its role): {', '.join(unused)}")
    cross = collect_entries(cross_model_dir, progress) if cross_model_dir is not None else []
    return compute_metrics(inputs, cross)


def write_report(metrics: Metrics, plan: OutputPlan) -> Path:
    """Write metrics.json and render FINDINGS.md / report.html from it through ``plan``."""
    from ..report.findings import render_findings  # deferred: markdown_it, plotly

    text = metrics_json(metrics)
    document = render_findings(parse_metrics(text))  # the renderer reads the metrics back, as any reader would
    return plan.write_report({"FINDINGS.md": document.to_markdown(), "report.html": document.to_html(), "metrics.json": text})


def check_same_settings(configs: dict[str, ExperimentConfig], folder: Path) -> None:
    """Before anything runs: the configs of one report share every generation setting (a pruning config its pruning aside)."""
    as_dicts = {name: c.to_dict() for name, c in configs.items()}
    ignore = {name: ("pruning",) for name, c in as_dicts.items() if config_role(c) == PRUNING}
    check_comparable(as_dicts, f"the configs in {folder}", ignore)


def check_one_model(experiments: dict) -> None:
    """A report compares runs of one model at one dtype: a mix is refused, naming each experiment's model; runs of one
    name but different files (fingerprints) too (:func:`~.comparable.check_fingerprints`)."""
    made_with = {name: (str(e.model.get("name")), str(e.model.get("dtype"))) for name, e in experiments.items()}
    if len(set(made_with.values())) > 1:
        listed = "; ".join(f"{name}: {model} {dtype}" for name, (model, dtype) in sorted(made_with.items()))
        raise ConfigError(
            f"the saved experiments were made with different models or dtypes ({listed}); a report compares runs of "
            "one model: move the others to another folder, or use `analyze --models` for a cross-model study"
        )
    check_fingerprints(experiments)


@dataclasses.dataclass(frozen=True)
class Sources:
    """What one report is made from: the configs to run, or (without configs) the saved experiment folders by name."""

    configs: dict[str, ExperimentConfig]
    saved: dict[str, Path]


def choose_sources(folder: Path, model: str | None, dtype: str | None, quick: bool = False, allow_large: bool = False) -> Sources:
    """The config stage: the folder's configs (``quick``: the single-prompt ones), refused before any model is loaded
    when they cannot make one report (a bad pair, past the run bound without ``allow_large``, different settings or
    models); without configs, the saved experiments of the folder."""
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; pass a folder of experiment configs (*.toml) or of saved runs")
    configs = find_configs(folder)
    if not configs:
        saved = find_saved(folder)
        if not saved:
            raise ConfigError(
                f"{folder} holds no experiment configs (*.toml) and no saved experiments; "
                "pass a folder of configs, or the folder `tempo-lens run` wrote"
            )
        return Sources({}, saved)
    if quick and _select(configs, (SINGLE,)):
        configs = _select(configs, (SINGLE,))
    check_pair({name: c.to_dict() for name, c in configs.items()})  # refuse before the model is loaded
    for config in configs.values():
        check_run_count(config, allow_large)  # past the bound only when asked (--allow-large, or in the config)
    check_same_settings(configs, folder)
    chosen = {name: (model or c.model or "the default model", dtype or c.dtype or "float32") for name, c in configs.items()}
    if len(set(chosen.values())) > 1:  # the report would mix them: refuse before anything runs
        listed = "; ".join(f"{name}: {m} {d}" for name, (m, d) in sorted(chosen.items()))
        raise ConfigError(
            f"the configs in {folder} name different models or dtypes ({listed}); a report compares runs "
            "of one model: pass --model (and --dtype), or use `analyze --models` for a cross-model study"
        )
    return Sources(configs, {})


def plan_outputs(sources: Sources, folder: Path, out: Path, overwrite: bool, progress: Progress) -> OutputPlan:
    """The plan stage: where the runs and the report go, checked against what is there before anything runs."""
    plan = OutputPlan(out, overwrite)
    if sources.configs:
        plan.check(list(sources.configs))
    else:
        plan.check()
        progress(f"no configs in {folder}: building the report from {len(sources.saved)} saved experiment(s)")
    return plan


def generate(
    sources: Sources,
    plan: OutputPlan,
    progress: Progress,
    model: str | None,
    dtype: str | None,
    backend: BackendName,
    allow_large: bool,
) -> dict[str, Path]:
    """The generate stage: each config's runs made and saved (kept or resumed where an earlier analyze got to,
    :func:`run_configs`); without configs, the saved folders as they are."""
    if not sources.configs:
        return sources.saved
    return run_configs(sources.configs, model, plan, progress, dtype=dtype, backend=backend, allow_large=allow_large)


def saved_runs(paths: dict[str, Path], sources: Sources, plan: OutputPlan, progress: Progress) -> dict[str, Experiment]:
    """The save stage's result, read back: the runs this analyze wrote or kept must still match its manifest."""
    progress("building the report from the saved experiment files")
    expected = {name: plan.manifest.runs.get(name) for name in paths} if sources.configs else None
    return read_saved(paths, expected)


def analyze(
    folder: Path,
    model: str | None = None,
    progress: Progress = print,
    quick: bool = False,
    overwrite: bool = False,
    out: Path | None = None,
    dtype: str | None = None,
    backend: BackendName = "bridge",
    allow_large: bool = False,
) -> Path:
    """config -> plan -> generate (resume) -> saved runs -> metrics -> report; returns the report folder."""
    started = time.perf_counter()
    folder, out = Path(folder), Path(out if out is not None else folder)
    sources = choose_sources(folder, model, dtype, quick, allow_large)
    plan = plan_outputs(sources, folder, out, overwrite, progress)
    paths = generate(sources, plan, progress, model, dtype, backend, allow_large)
    experiments = saved_runs(paths, sources, plan, progress)
    metrics = report_metrics(experiments, progress, cross_model_dir=out / "models")
    target = write_report(metrics, plan)
    progress(
        f"wrote {target / 'FINDINGS.md'}, {target / 'report.html'}, {target / 'metrics.json'} "
        f"({time.perf_counter() - started:.0f} s in all)"
    )
    return target


def analyze_models(
    folder: Path,
    models: list[str],
    progress: Progress = print,
    overwrite: bool = False,
    dtype: str | None = None,
    backend: BackendName = "bridge",
) -> Path:
    """The cross-model study: each model into ``folder/models/NAME``, then the main report with the Cross-model section."""
    started = time.perf_counter()
    folder = Path(folder)
    names = zoo_names() if models == ["all"] else models
    configs = _select(find_configs(folder), (SINGLE, MULTI))
    if not configs:
        raise ConfigError(f"{folder} has no single-prompt or multi-prompt configs (*.toml) to run on each model")
    check_pair({name: c.to_dict() for name, c in configs.items()})
    plans = {name: OutputPlan(folder / "models" / sub, overwrite, model=name) for name, sub in model_folders(names).items()}
    for plan in plans.values():
        plan.check(list(configs))
    main_runs = find_saved(folder / "runs") if (folder / "runs").is_dir() else {}
    if main_runs:
        OutputPlan(folder, overwrite).check()  # refuse before any model runs
    else:  # the Cross-model section lives in the main report: write the main runs first (plain `make analyze`)
        progress(f"{folder / 'runs'} holds no saved experiments: running the main analysis on the default model first")
        analyze(folder, progress=progress, overwrite=overwrite, dtype=dtype, backend=backend)
        main_runs = find_saved(folder / "runs")
    for name, plan in plans.items():
        began = time.perf_counter()
        try:
            paths = run_configs(configs, name, plan, progress, dtype=dtype, backend=backend)
        except TempoLensError as exc:
            progress(f"skipping model {name}: {exc}")
            continue
        build_report(paths, plan, progress, expected={n: plan.manifest.runs.get(n) for n in paths})
        progress(f"model {name}: report in {plan.report_dir} ({time.perf_counter() - began:.0f} s)")
    main_plan = OutputPlan(folder, overwrite)  # read now, so the manifest keeps the main runs written above
    target = build_report(main_runs, main_plan, progress, cross_model_dir=folder / "models")
    progress(f"wrote {target / 'FINDINGS.md'} with the Cross-model section ({time.perf_counter() - started:.0f} s in all)")
    return target
