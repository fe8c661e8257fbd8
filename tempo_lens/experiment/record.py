"""The schema of an experiment's ``metadata.json``: every field typed, checked at load time before use.

:func:`check_metadata` decodes the parsed file into these dataclasses (:mod:`tempo_lens.io.records`) and
then checks what types cannot say: layers are distinct model layers, steps distinct and non-negative,
the stored config is a valid config (its generation settings rebuild a
:class:`~tempo_lens.generation.GenerationConfig`). A file that does not fit is refused naming the file
and the field, even when its checksum was recomputed to match.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from ..backends.base import SpeedRecord
from ..errors import ExperimentFileError, InvalidInputError
from ..generation.config import GenerationConfig
from ..io.records import FieldError, decode
from ..layout import LayoutRecord, Mode

Variant = Literal["generated", "unique_positions", "toggled_mask"]
Dtype = Literal["float32", "bfloat16", "float16"]
Control = Literal["unique_positions", "toggled_mask"]


@dataclass
class ModelRecord:
    name: str
    n_layers: int
    n_heads: int
    n_kv_heads: int | None = None
    d_model: int | None = None
    n_ctx: int | None = None
    n_params: int | None = None
    dtype: str | None = None
    fingerprint: str | None = None  # weights_identity.folder_fingerprint of the model's folder (None: unknown)


@dataclass
class ConfigRecord:
    """The experiment's own keys of the stored config; its generation settings are checked by GenerationConfig."""

    name: str
    prompts: list[str]
    modes: list[Mode]
    model: str | None = None
    dtype: Dtype | None = None
    controls: list[Control] = field(default_factory=list)
    batch_size: int | None = None
    capture_layers: list[int] | None = None
    capture_steps: list[int] | None = None


@dataclass
class RunMetaRecord:
    """The typed part of a run's ``meta`` (other keys are free)."""

    variant: Variant = "generated"
    prompt_index: int | None = None
    source_run: str | None = None
    mask: Mode | None = None
    model: str | None = None
    threshold: float | None = None
    max_steps: int | None = None
    max_parallel: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    prompt_token_ids: list[int] | None = None
    text: str | None = None
    clean_text: str | None = None
    stop_reason: str | None = None
    speed: SpeedRecord | None = None  # the speed paths and kernel plan that produced it (absent in older files)


@dataclass
class RunRecord:
    name: str
    prompt: str
    mode: Mode
    layers: list[int]
    steps: list[int]
    token_strings: list[str]
    layout: dict[str, Any]
    meta: dict[str, Any]


@dataclass
class ExperimentRecord:
    format_version: int
    kind: Literal["tempo_lens.experiment"]
    config: dict[str, Any]
    model: ModelRecord
    versions: dict[str, str | None]
    runs: list[RunRecord]
    arrays_sha256: str
    metadata_sha256: str
    shard: str | None = None
    created: str | None = None


def _distinct(values: list[int], where: str, low: int | None, high: int | None) -> None:
    if len(set(values)) != len(values):
        raise FieldError(where, f"lists a value twice ({values[:8]})")
    bad = [v for v in values if (low is not None and v < low) or (high is not None and v >= high)]
    if bad:
        raise FieldError(where, f"holds {bad[:3]}, outside {low}..{'' if high is None else high - 1}")


def _check_settings(config: dict[str, Any], n_layers: int | None) -> None:
    keys = [k for k in GenerationConfig.keys() if k not in ("mode", "capture") and k in config]
    hints = typing.get_type_hints(GenerationConfig)
    for key in keys:  # the plain settings typed by GenerationConfig's own annotations (one source)
        if key != "pruning":
            decode(hints[key], config[key], f"config.{key}")
    try:
        GenerationConfig(**{k: config[k] for k in keys})
    except (InvalidInputError, TypeError) as exc:
        named = next((k for k in keys if k in str(exc)), None)
        raise FieldError(f"config.{named}" if named else "config", str(exc)) from None
    for key in ("capture_layers", "capture_steps"):
        if config.get(key) is not None:
            _distinct(
                config[key],
                f"config.{key}",
                (-n_layers if n_layers is not None else None) if key == "capture_layers" else 0,
                n_layers if key == "capture_layers" else None,
            )


def check_config(config: Any, n_layers: int | None = None) -> None:
    """The stored config's rules (types, settings, distinct capture layers and steps); ``n_layers`` None skips the
    layer range. The one check of a config: :func:`check_metadata` applies it to saved folders, and
    :func:`~.config.config_from_dict` and :func:`~.runner.run_experiment` to a config before anything is generated."""
    decode(ConfigRecord, config, "config")
    _check_settings(config, n_layers)


def check_metadata(data: Any, source: str, fix: str) -> ExperimentRecord:
    """``data`` (parsed ``metadata.json``) typed and checked, or a refusal naming ``source`` and the field."""
    try:
        record = decode(ExperimentRecord, data, "metadata")
        n_layers = record.model.n_layers
        if n_layers < 1 or record.model.n_heads < 1:
            raise FieldError("model.n_layers", f"a model has at least one layer and head, got {n_layers}, {record.model.n_heads}")
        check_config(record.config, n_layers)
        for i, run in enumerate(record.runs):
            where = f"runs[{i}]"
            decode(RunMetaRecord, run.meta, f"{where}.meta")
            decode(LayoutRecord, run.layout, f"{where}.layout")
            _distinct(run.layers, f"{where}.layers", 0, n_layers)
            _distinct(run.steps, f"{where}.steps", -1, None)
    except FieldError as exc:
        raise ExperimentFileError(f"{source}: {exc}; {fix}") from None
    return record
