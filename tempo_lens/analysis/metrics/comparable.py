"""Which saved experiments a report may compare: the same model (by fingerprint) and the same generation settings.

A report puts runs side by side (the isolated and the visible run of one prompt) and states one set of
settings for them all, so every experiment it uses must have been generated the same way: the same model
(name, dtype, backend and the fingerprint of its files, :mod:`tempo_lens.models.identity`) and the same value
of every setting that changes a generation (:data:`GENERATION_SETTINGS`: every
:class:`~tempo_lens.generation.GenerationConfig` setting but ``mode``, which the pair differs in by design, and
``capture``, which changes what is recorded, not what is generated). The pruning experiment differs in
``pruning`` by its role. Anything else is refused, naming the setting and each experiment's value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import ConfigError
from ...experiment import Experiment
from ...generation.config import GenerationConfig

MODEL_FACTS = ("name", "dtype", "backend", "fingerprint")


def generation_settings() -> tuple[str, ...]:
    """The settings that change what a generation produces (``mode`` and ``capture`` aside)."""
    return tuple(k for k in GenerationConfig.keys() if k not in ("mode", "capture"))


def made_with(experiment: Experiment | Mapping[str, Any], ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """The model facts and generation settings an experiment's runs were made with (``ignore``: settings left out);
    of a config (its dict, before anything ran) the generation settings only."""
    config, model = (experiment, {}) if isinstance(experiment, Mapping) else (experiment.config, experiment.model)
    facts = {f"model {k}": model.get(k) for k in MODEL_FACTS} if model else {}
    settings = {k: config.get(k) for k in generation_settings() if k not in ignore}
    return {**facts, **settings}


def differences(
    experiments: Mapping[str, Experiment | Mapping[str, Any]], ignore: Mapping[str, tuple[str, ...]] | None = None
) -> list[str]:
    """Each setting on which the experiments (or configs, as dicts) disagree, as ``setting (name: value, name: value)``."""
    ignore = ignore or {}
    facts = {name: made_with(e, ignore.get(name, ())) for name, e in experiments.items()}
    keys = sorted({k for f in facts.values() for k in f if all(k in g for g in facts.values())})
    out = []
    for key in keys:
        values = {name: f[key] for name, f in facts.items()}
        if len({repr(v) for v in values.values()}) > 1:
            out.append(f"{key} ({', '.join(f'{name}: {value!r}' for name, value in sorted(values.items()))})")
    return out


def check_comparable(
    experiments: Mapping[str, Experiment | Mapping[str, Any]], what: str, ignore: Mapping[str, tuple[str, ...]] | None = None
) -> None:
    """Refuse experiments whose runs were made with different models or settings, naming every difference."""
    found = differences(experiments, ignore)
    if found:
        raise ConfigError(
            f"{what} were generated with different settings: {'; '.join(found)}; a report compares runs made the "
            "same way: give the configs the same settings (or move the odd experiment to another folder) and run again"
        )


def check_fingerprints(experiments: Mapping[str, Experiment]) -> None:
    """One model per report, by what it is: runs of different fingerprints are refused, and so is a mix of runs with
    and without one (saved before fingerprints: the model they were made with cannot be told)."""
    prints = {name: e.model.get("fingerprint") for name, e in experiments.items()}
    known = {p for p in prints.values() if p is not None}
    if len(known) > 1 or (known and None in prints.values()):
        listed = "; ".join(f"{name}: {p or 'unknown (saved before fingerprints)'}" for name, p in sorted(prints.items()))
        raise ConfigError(
            f"the saved experiments were made with different model files ({listed}), even where the model name is the "
            "same; a report compares runs of one model: regenerate them (analyze of the configs regenerates runs whose "
            "model changed) or move the others to another folder"
        )
