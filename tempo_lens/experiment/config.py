"""Experiment configs: what an experiment runs (prompts × modes on one model, with controls), from TOML.

A config file holds the experiment's own keys (``name``, ``prompt``/``prompts``/``prompts_file``,
``model``, ``dtype``, ``mode``/``modes``, ``controls``, ``batch_size``) and, at the top level, any
generation setting of :class:`~tempo_lens.generation.GenerationConfig` (``threshold``, ``max_steps``,
... with the tables ``[pruning]`` and ``[capture]``). Unknown keys are named with a "did you mean" hint.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from ..errors import ConfigError, InvalidInputError
from ..generation.config import GenerationConfig, check_choice, check_int, pruning_from_mapping, reject_unknown
from ..io.capped_read import CappedReadError, read_capped
from ..io.records import MAX_DEPTH, FieldError, too_deep
from ..models.loading import DTYPES as _MODEL_DTYPES
from .record import check_config

Control = Literal["unique_positions", "toggled_mask"]
CONTROLS: tuple[Control, ...] = get_args(Control)
DTYPES: tuple[str, ...] = tuple(_MODEL_DTYPES)  # the names load_model accepts
EXPERIMENT_KEYS = (
    "name",
    "prompt",
    "prompts",
    "prompts_file",
    "model",
    "dtype",
    "mode",
    "modes",
    "controls",
    "batch_size",
    "allow_large",
)
MAX_PROMPTS_FILE_BYTES = 16 * 2**20
MAX_CONFIG_BYTES = 2**20
MAX_NAME_CHARS = 100
# Unicode categories a name may not hold: controls (C0, DEL, C1), format characters (U+200B, U+202E bidi overrides),
# line and paragraph separators (U+2028, U+2029): invisible or reordering in a folder listing or a report
INVISIBLE_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")
RESERVED_NAMES = ("report", "runs", "models")  # folders of the analyze layout (OUT/report, OUT/runs, OUT/models)


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
    allow_large: bool = False  # past the bounds of :mod:`.budget` (asked for explicitly; not a result setting, not stored)

    def __post_init__(self) -> None:
        if self.batch_size is not None:
            object.__setattr__(self, "batch_size", check_int(self.batch_size, "batch_size", 1))
        if self.dtype is not None:
            check_choice(self.dtype, "dtype", DTYPES)

    def with_model(self, model: str | None, dtype: str | None = None) -> ExperimentConfig:
        return replace(self, model=model or self.model, dtype=dtype or self.dtype)

    def to_dict(self) -> dict:
        """Flat plain values, as stored in an experiment's metadata (generation settings at the top level)."""
        settings = self.generation.to_dict()
        capture = settings.pop("capture") or {}
        settings.pop("mode")
        return {
            "name": self.name,
            "prompts": list(self.prompts),
            "model": self.model,
            "dtype": self.dtype,
            "modes": list(self.modes),
            "controls": list(self.controls),
            "batch_size": self.batch_size,
            **settings,
            "capture_layers": capture.get("layers"),
            "capture_steps": capture.get("steps"),
        }


def _cannot_open(what: str, name: str, cause: str) -> str:
    return f"cannot open {what} {name} ({cause}); check the path and its permissions"


def _refusal_message(refusal: CappedReadError, what: str, name: str, limit: int) -> str:
    if refusal.reason == "folder" or isinstance(refusal.error, IsADirectoryError):
        return f"{what} {name} is a folder; pass a file"
    match refusal.reason:
        case "open" if isinstance(refusal.error, FileNotFoundError):
            return f"{what} {name} does not exist; check the path"
        case "open":
            return _cannot_open(what, name, refusal.cause)
        case "special":
            return f"{what} {name} is not a regular file (a device, pipe or socket); pass a text file"
        case "read":
            return f"cannot read {what} {name} ({refusal.cause}); check the file"
        case _:
            return f"{what} {name} is larger than {limit >> 20} MiB; is it the right file? Split it if it is"


def read_text_file(path: Path, what: str, limit: int) -> str:
    """A UTF-8 text file (a leading BOM is dropped), or a ConfigError naming ``what`` and the fix.

    Only regular files are read (a FIFO, ``/dev/zero`` or a folder is refused before anything is read,
    so nothing blocks or fills memory), up to ``limit`` bytes; binary and non-UTF-8 files are refused.
    """
    name = repr(str(path))
    try:
        data = read_capped(path, limit)
    except CappedReadError as exc:
        raise ConfigError(_refusal_message(exc, what, name, limit)) from None
    except ValueError as exc:  # a path the OS cannot take (a NUL byte)
        raise ConfigError(_cannot_open(what, name, str(exc))) from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{what} {name} is UTF-16 text, not UTF-8; convert it, e.g. `iconv -f utf-16 -t utf-8`")
    if b"\0" in data:
        raise ConfigError(f"{what} {name} is a binary file; give UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {name} is not UTF-8 (byte {exc.start}); convert it, e.g. `iconv -f latin1 -t utf-8`") from None


def _read_prompts_file(path: Path, source: str) -> list[str]:
    try:
        text = read_text_file(path, "prompts_file", MAX_PROMPTS_FILE_BYTES)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc} (one prompt per line)") from None
    return prompt_lines(text)


def prompt_lines(text: str) -> list[str]:
    """One prompt per line, split on ``\n`` only (``\r\n`` too): U+2028, U+0085, form feeds and other
    Unicode breaks stay inside their prompt. Blank lines and lines starting with ``#`` are skipped."""
    lines = (line.removesuffix("\r").strip() for line in text.split("\n"))
    return [line for line in lines if line and not line.startswith("#")]


def _prompts(data: dict, source: str, base_dir: Path | None) -> list[str]:
    given = [key for key in ("prompt", "prompts", "prompts_file") if key in data]
    if len(given) > 1:
        raise ConfigError(f"{source}: give one of prompt, prompts or prompts_file, not {' and '.join(given)}")
    if "prompts_file" in data:
        if not isinstance(data["prompts_file"], str) or not data["prompts_file"].strip():
            raise ConfigError(f"{source}: prompts_file must be a string (a file name), got {data['prompts_file']!r}")
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
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config is a table of settings, got {type(data).__name__}")
    try:
        allowed = set(EXPERIMENT_KEYS) | set(GenerationConfig.keys())
        if "seed" in data:
            raise InvalidInputError("'seed' is not a setting: TEMPO's selection is deterministic (nothing is sampled); remove it")
        reject_unknown(data, allowed, "the top level")
        for key in ("model", "name", "dtype"):
            if key in data and not isinstance(data[key], str):
                raise InvalidInputError(f"{key} must be a string, got {data[key]!r}")
        check_name(data.get("name"))
        if "model" in data and not data["model"].strip():
            raise InvalidInputError(
                "model is empty; give a model name or folder, or remove the key for the embedded default model"
            )
        if "mode" in data and "modes" in data:
            raise InvalidInputError("give mode or modes, not both")
        modes = data.get("modes", data.get("mode", "isolated"))
        modes = [modes] if isinstance(modes, str) else modes
        if not isinstance(modes, list) or not modes or not all(isinstance(m, str) for m in modes) or len(set(modes)) < len(modes):
            raise InvalidInputError(f"modes must be a mode or a list of modes (each once), got {modes!r}")
        controls = data.get("controls", [])
        if not isinstance(controls, list) or len(set(map(repr, controls))) < len(controls):
            raise InvalidInputError(f"controls must be a list drawn from {list(CONTROLS)} (each once), got {controls!r}")
        if not isinstance(data.get("allow_large", False), bool):
            raise InvalidInputError(f"allow_large must be true or false, got {data['allow_large']!r}")
        for control in controls:
            check_choice(control, "control", CONTROLS)
        settings = {k: v for k, v in data.items() if k in GenerationConfig.keys() and k != "mode"}
        capture = settings.get("capture", {})
        if capture is False:
            raise InvalidInputError(
                "capture = false: an experiment always captures attention; remove the key or use a [capture] table"
            )
        for key in ("layers", "steps"):
            if isinstance(capture, dict) and capture.get(key) == []:
                raise InvalidInputError(f'[capture] {key} is empty, so nothing would be measured; list {key} or use "all"')
        settings["capture"] = {} if capture is None else capture  # experiments always capture
        generation = GenerationConfig(mode=modes[0], **settings)
        for mode in modes[1:]:  # each mode is checked by the one definition of the setting
            generation.replace(mode=mode)
        prompts = _prompts(data, source, base_dir)
        config = ExperimentConfig(
            name="experiment",
            prompts=prompts,
            model=data.get("model") or None,
            dtype=data.get("dtype"),
            modes=modes,
            controls=controls,
            generation=generation,
            batch_size=data.get("batch_size"),
            allow_large=data.get("allow_large", False),
        )
    except InvalidInputError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except TypeError as exc:  # a table where a value belongs, or the reverse
        raise ConfigError(f"{source}: {exc}") from None
    name = data.get("name") or (Path(source).stem if source != "config" else "experiment")
    if not data.get("name"):
        try:
            check_name(name)
        except InvalidInputError:
            name = "experiment"
    config = replace(config, name=str(name))

    try:  # the rules load_experiment applies to the saved config, checked before anything is generated
        check_config(json.loads(json.dumps(config.to_dict())))
    except FieldError as exc:
        raise ConfigError(f"{source}: {setting_words(exc.where)} {exc.problem}") from None
    return config


def setting_words(where: str) -> str:
    """A stored config field (``config.capture_layers``) as the config file spells it (``[capture] layers``)."""
    key = where.removeprefix("config.")
    table, _, inner = key.partition("_")
    return f"[{table}] {inner}" if table == "capture" and inner in ("layers", "steps") else key


def check_name(name: object) -> None:
    """An experiment name becomes a folder (``runs/NAME``): one plain, visible path component."""
    if name is None:
        return
    if (
        not isinstance(name, str)
        or not name.strip()
        or len(name) > MAX_NAME_CHARS
        or name.startswith(".")
        or any(c in name for c in "/\\")
        or any(unicodedata.category(c) in INVISIBLE_CATEGORIES for c in name)
    ):
        raise InvalidInputError(
            f"name must be a plain folder name (no / or \\, not starting with '.', no control, format or line/paragraph "
            f'separator characters, at most {MAX_NAME_CHARS} characters), got {name!r}; e.g. name = "exp1"'
        )
    if name.lower() in RESERVED_NAMES or re.fullmatch(r"shard-\d+-of-\d+", name):
        raise InvalidInputError(
            f"name {name!r} is reserved: {', '.join(RESERVED_NAMES)} and shard-i-of-n are folders of the output layout; "
            'choose another name, e.g. name = "exp1"'
        )


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read and check a TOML config (a regular UTF-8 file of at most 1 MiB)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ConfigError(f"the config must be a path to a .toml file, got {path!r}")
    path = Path(path)
    text = read_text_file(path, "config file", MAX_CONFIG_BYTES)

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:
        data = None
    if data is None or too_deep(data):
        raise ConfigError(f"{path}: values nest deeper than {MAX_DEPTH} levels; no setting needs that. Check the file")
    return config_from_dict(data, source=str(path), base_dir=path.parent)


def pruning_from_config(table: dict | None) -> Any:
    """The pruning strategy of a stored config's ``pruning`` table (None when it has none)."""
    if table is None:
        return None

    return pruning_from_mapping(table)
