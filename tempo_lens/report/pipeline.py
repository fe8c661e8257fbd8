"""``make analyze``: run the experiment configs of a folder, then build the report from their files.

The model is loaded once; every experiment is saved atomically under ``FOLDER/runs/NAME`` and the
report is built only from those saved folders, then written atomically to ``FOLDER/report``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from ..atomic import atomic_directory
from ..errors import ConfigError
from ..experiment import load_config, load_experiment, run_experiment, save_experiment
from .metrics import ReportInputs

REQUIRED = ("exp1_isolated", "exp1_visible")
OPTIONAL = ("multi_prompt", "pruning")


def run_configs(folder: Path, model_name: str | None, progress: Callable[[str], None], names: tuple[str, ...], dtype: str | None = None) -> dict[str, Path]:
    from ..model import load_model

    configs = {}
    for name in names:
        path = folder / f"{name}.toml"
        if path.exists():
            configs[name] = load_config(path)
        elif name in REQUIRED:
            raise ConfigError(f"{path} is missing; `make analyze` needs {', '.join(n + '.toml' for n in REQUIRED)} in {folder}")
    chosen = model_name or configs[REQUIRED[0]].model
    progress(f"loading model {chosen or 'SmolLM2-135M-Instruct (embedded default)'}")
    model = load_model(chosen, dtype=dtype)
    out = {}
    for name, config in configs.items():
        config.model = chosen
        started = time.perf_counter()
        experiment = run_experiment(config, model, progress=progress)
        out[name] = save_experiment(experiment, folder / "runs" / name, overwrite=True)
        progress(f"{name}: {len(experiment.runs)} runs saved to {out[name]} in {time.perf_counter() - started:.1f} s")
    return out


def write_report(inputs: ReportInputs, target: Path) -> Path:
    """Compute, render and write FINDINGS.md, report.html and metrics.json atomically into ``target``."""
    from .findings import render_findings

    from . import compute_metrics

    metrics = compute_metrics(inputs)
    document = render_findings(metrics, inputs)
    with atomic_directory(target) as tmp:
        (tmp / "FINDINGS.md").write_text(document.to_markdown(), encoding="utf-8")
        (tmp / "report.html").write_text(document.to_html(), encoding="utf-8")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1, ensure_ascii=False), encoding="utf-8")
    return target


def analyze(folder: Path, model: str | None = None, progress: Callable[[str], None] = print, quick: bool = False, dtype: str | None = None) -> Path:
    started = time.perf_counter()
    names = REQUIRED if quick else REQUIRED + OPTIONAL
    paths = run_configs(folder, model, progress, names, dtype=dtype)
    progress("building the report from the saved experiment files")
    inputs = ReportInputs(
        isolated=load_experiment(paths["exp1_isolated"]),
        visible=load_experiment(paths["exp1_visible"]),
        multi=load_experiment(paths["multi_prompt"]) if "multi_prompt" in paths else None,
        pruning=load_experiment(paths["pruning"]) if "pruning" in paths else None,
    )
    target = write_report(inputs, folder / "report")
    progress(f"wrote {target / 'FINDINGS.md'}, {target / 'report.html'}, {target / 'metrics.json'} "
             f"({time.perf_counter() - started:.0f} s in all)")
    return target
