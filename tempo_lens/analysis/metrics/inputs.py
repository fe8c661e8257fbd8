"""Which experiments a report is built from, found by what they contain rather than by their names.

A folder may hold any experiments. Each has a role, read from its config:

- **pruning**: retroactive pruning is on;
- **multi-prompt**: two or more prompts (pruning off);
- **single**: one prompt (pruning off).

The report's single-run sections need an isolated and a visible generation of one prompt: the first
isolated run of the single-prompt experiments (by name), else of the multi-prompt ones, and the
visible run of the same prompt. The multi-prompt section uses the multi-prompt experiment with the
most prompts; the pruning section the first pruning experiment by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ...capture import CapturedRun
from ...errors import ConfigError
from ...experiment import Experiment
from .comparable import check_comparable, differences

SINGLE, MULTI, PRUNING = "single", "multi-prompt", "pruning"


def config_role(config: dict) -> str:
    """The role of an experiment config (as a dict: ``ExperimentConfig.to_dict()`` or saved metadata)."""
    if config.get("pruning"):
        return PRUNING
    return MULTI if len(config.get("prompts") or []) >= 2 else SINGLE


def experiment_name(experiment: Experiment) -> str:
    return str(experiment.config.get("name") or (experiment.path.name if experiment.path else "experiment"))


@dataclass
class RunRef:
    """A generated run and the experiment that holds it (and its control replays)."""

    experiment: Experiment
    run: CapturedRun

    @property
    def name(self) -> str:
        return experiment_name(self.experiment)

    def variant(self, variant: str) -> CapturedRun | None:
        """The control replay ``variant`` of this run, if the experiment has one."""
        for run in self.experiment.variant(variant):
            if run.meta.get("source_run") == self.run.name:
                return run
        return None


@dataclass
class ReportInputs:
    """The experiments a report is built from; ``multi`` and ``pruning`` are optional sections."""

    isolated: RunRef
    visible: RunRef
    multi: Experiment | None = None
    pruning: Experiment | None = None

    def used(self) -> set[str]:
        chosen = [self.isolated.experiment, self.visible.experiment, self.multi, self.pruning]
        return {experiment_name(e) for e in chosen if e is not None}


def _same_prompt(ref: RunRef, candidates: list[RunRef]) -> RunRef | None:
    key = ref.run.meta.get("prompt_index"), ref.run.prompt
    same = [c for c in candidates if c.run.prompt == ref.run.prompt]
    same.sort(key=lambda c: (c.experiment is not ref.experiment, (c.run.meta.get("prompt_index"), c.run.prompt) != key))
    return same[0] if same else None


def _no_pair(names: list[str]) -> ConfigError:
    return ConfigError(
        f"the report compares an isolated and a visible generation of the same prompt, and these experiments "
        f"({', '.join(names) or 'none'}) have no such pair (pruning experiments are not used for it); add a config with "
        '`modes = ["isolated", "visible"]`, or two configs with mode = "isolated" and mode = "visible"'
    )


def check_pair(configs: dict[str, dict]) -> None:
    """Before anything runs: some prompt must get an isolated and a visible generation (configs by name, as dicts)."""
    seen: dict[str, set[str]] = {}
    for config in configs.values():
        if config_role(config) != PRUNING:
            for prompt in config.get("prompts") or []:
                seen.setdefault(prompt, set()).update(config.get("modes") or [])
    if not any({"isolated", "visible"} <= modes for modes in seen.values()):
        raise _no_pair(sorted(configs))


def choose_inputs(experiments: Iterable[Experiment]) -> ReportInputs:
    """Assign roles (module docstring); a folder without an isolated + visible pair of one prompt is refused."""
    by_name = sorted(experiments, key=experiment_name)
    roles = {experiment_name(e): config_role(e.config) for e in by_name}
    candidates: list[RunRef] = []
    for role in (SINGLE, MULTI):
        for experiment in (e for e in by_name if roles[experiment_name(e)] == role):
            candidates += [RunRef(experiment, run) for run in experiment.generated()]

    isolated = [c for c in candidates if c.run.mode == "isolated"]
    visible = [c for c in candidates if c.run.mode == "visible"]
    pairs = [(i, v) for i in isolated if (v := _same_prompt(i, visible)) is not None]
    if not pairs:
        raise _no_pair(list(roles))
    # the first pair made the same way (model and every generation setting); else the first, refused naming the difference
    pair = next((p for p in pairs if not differences({p[0].name: p[0].experiment, p[1].name: p[1].experiment})), pairs[0])
    check_comparable(
        {pair[0].name: pair[0].experiment, pair[1].name: pair[1].experiment},
        f"the isolated and visible runs of the prompt {pair[0].run.prompt!r}",
    )
    multis = [e for e in by_name if roles[experiment_name(e)] == MULTI]
    multi = max(multis, key=lambda e: len(e.config.get("prompts") or []), default=None)
    pruning = next((e for e in by_name if roles[experiment_name(e)] == PRUNING), None)
    inputs = ReportInputs(isolated=pair[0], visible=pair[1], multi=multi, pruning=pruning)
    check_comparable(
        {experiment_name(e): e for e in by_name},
        "the experiments of one report",
        ignore={experiment_name(e): ("pruning",) for e in by_name if roles[experiment_name(e)] == PRUNING},
    )
    return inputs
