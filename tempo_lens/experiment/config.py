"""Experiment configs: what an experiment runs (prompts × modes on one model, with controls), from TOML.

A config file holds the experiment's own keys (``name``, ``prompt``/``prompts``/``prompts_file``,
``model``, ``dtype``, ``mode``/``modes``, ``controls``, ``batch_size``) and, at the top level, any
generation setting of :class:`~tempo_lens.generation.GenerationConfig` (``threshold``, ``max_steps``,
... with the tables ``[pruning]`` and ``[capture]``). Unknown keys are named with a "did you mean" hint.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InvalidInputError
from ..generation.config import GenerationConfig, check_int, reject_unknown
from ..layout import MODES

CONTROLS = ("unique_positions", "toggled_mask")
DTYPES = ("float32", "bfloat16", "float16")
EXPERIMENT_KEYS = ("name", "prompt", "prompts", "prompts_file", "model", "dtype", "mode", "modes", "controls", "batch_size")
MAX_PROMPTS_FILE_BYTES = 16 * 2**20


@dataclass(frozen=True)
class ExperimentConfig:
    """Prompts × modes on one model with one set of generation settings, plus the controls to replay."""

    name: str
    prompts: list[str]
    model: str | None = None
    dtype: str | None = None
    modes: list[str] = field(default_factory=lambda: ["isolated"])
    controls: list[str] = field(default_factory=list)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    batch_size: int | None = None

    def with_model(self, model: str | None, dtype: str | None = None) -> "ExperimentConfig":
        return replace(self, model=model or self.model, dtype=dtype or self.dtype)

    def to_dict(self) -> dict:
        """Flat plain values, as stored in an experiment's metadata (generation settings at the top level)."""
        settings = self.generation.to_dict()
        capture = settings.pop("capture") or {}
        settings.pop("mode")
        return {
            "name": self.name, "prompts": list(self.prompts), "model": self.model, "dtype": self.dtype,
            "modes": list(self.modes), "controls": list(self.controls), "batch_size": self.batch_size, **settings,
            "capture_layers": capture.get("layers"), "capture_steps": capture.get("steps"),
        }


def _read_prompts_file(path: Path, source: str) -> list[str]:
    if not path.is_file():
        what = "does not exist" if not path.exists() else "is not a regular file"
        raise ConfigError(f"{source}: prompts_file {str(path)!r} {what}; give a UTF-8 text file with one prompt per line")
    if path.stat().st_size > MAX_PROMPTS_FILE_BYTES:
        raise ConfigError(f"{source}: prompts_file {str(path)!r} is larger than {MAX_PROMPTS_FILE_BYTES >> 20} MiB; split it")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read prompts_file {str(path)!r}: {exc.strerror}") from None
    if b"\0" in data:
        raise ConfigError(f"{source}: prompts_file {str(path)!r} is a binary file; give UTF-8 text, one prompt per line")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{source}: prompts_file {str(path)!r} is not UTF-8 (byte {exc.start}); convert it, e.g. `iconv -f latin1 -t utf-8`"
        ) from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _prompts(data: dict, source: str, base_dir: Path | None) -> list[str]:
    if "prompts_file" in data:
        if not isinstance(data["prompts_file"], str):
            raise ConfigError(f"{source}: prompts_file must be a string, got {data['prompts_file']!r}")
        path = Path(data["prompts_file"])
        prompts = _read_prompts_file((base_dir / path) if base_dir and not path.is_absolute() else path, source)
    elif "prompts" in data:
        prompts = data["prompts"]
    elif "prompt" in data:
        prompts = [data["prompt"]]
    else:
        raise ConfigError(f"{source}: missing key 'prompt' (one prompt) or 'prompts' (a list) or 'prompts_file'")
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ConfigError(f"{source}: prompts must be a non-empty list of non-empty strings")
    return prompts


def config_from_dict(data: dict, source: str = "config", base_dir: Path | None = None) -> ExperimentConfig:
    """Validate a parsed config: unknown keys, missing prompts, wrong types and ranges are named."""
    try:
        allowed = set(EXPERIMENT_KEYS) | set(GenerationConfig.keys())
        if "seed" in data:
            raise InvalidInputError("'seed' is not a setting: TEMPO's selection is deterministic (nothing is sampled); remove it")
        reject_unknown(data, allowed, "the top level")
        for key in ("model", "name", "dtype"):
            if key in data and not isinstance(data[key], str):
                raise InvalidInputError(f"{key} must be a string, got {data[key]!r}")
        if data.get("dtype") is not None and data["dtype"] not in DTYPES:
            raise InvalidInputError(f"dtype must be one of {', '.join(DTYPES)}, got {data['dtype']!r}")
        modes = data.get("modes", data.get("mode", "isolated"))
        modes = [modes] if isinstance(modes, str) else modes
        if not isinstance(modes, list) or not modes or any(m not in MODES for m in modes):
            raise InvalidInputError(f"mode must be 'isolated', 'visible' or a list of them, got {modes!r}")
        controls = data.get("controls", [])
        if not isinstance(controls, list) or any(c not in CONTROLS for c in controls):
            raise InvalidInputError(f"controls must be a list drawn from {list(CONTROLS)}, got {controls!r}")
        batch_size = data.get("batch_size")
        if batch_size is not None:
            batch_size = check_int(batch_size, "batch_size", 1)
        settings = {k: v for k, v in data.items() if k in GenerationConfig.keys() and k != "mode"}
        capture = settings.get("capture", {})
        if isinstance(capture, dict) and capture.get("layers") == []:
            raise InvalidInputError("[capture] layers is empty, so nothing would be measured; list layers or use \"all\"")
        settings["capture"] = {} if capture is None else capture  # experiments always capture
        generation = GenerationConfig(mode=modes[0], **settings)
        prompts = _prompts(data, source, base_dir)
    except InvalidInputError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except TypeError as exc:  # a table where a value belongs, or the reverse
        raise ConfigError(f"{source}: {exc}") from None
    name = data.get("name") or (Path(source).stem if source != "config" else "experiment")
    return ExperimentConfig(name=str(name), prompts=prompts, model=data.get("model") or None, dtype=data.get("dtype"),
                            modes=modes, controls=controls, generation=generation, batch_size=batch_size)


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {str(path)!r} is a folder; pass a .toml file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {str(path)!r} ({exc}); pass a UTF-8 TOML file") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return config_from_dict(data, source=str(path), base_dir=path.parent)


def pruning_from_config(table: dict | None) -> Any:
    """The pruning strategy of a stored config's ``pruning`` table (None when it has none)."""
    if table is None:
        return None
    from ..generation.config import pruning_from_mapping

    return pruning_from_mapping(table)
