"""JSON records on disk, one way for every saved file: cleaned on the way out, bounded and typed on the way in.

Every JSON file tempo_lens writes (an experiment's ``metadata.json``, a result's ``result.json``, the
report's ``metrics.json``, the analyze manifest) is described by a dataclass and read through
:func:`read_record`, which

- opens only a regular file of at most ``max_bytes`` (a sparse or huge file is refused before a byte
  is parsed, so nothing fills memory);
- refuses nesting deeper than :data:`MAX_DEPTH` (the parser's own recursion limit never shows);
- decodes the parsed value by the dataclass's type hints (:func:`decode`: ``int``, ``float``, ``str``,
  ``bool``, ``Literal``, lists, dicts, unions, nested dataclasses), so a field of the wrong type is
  refused with the file and the field named, before anything uses it.

:func:`clean` is the one JSON cleaner: dataclasses to dicts, NumPy scalars to Python, NaN and
infinities to None (strict JSON).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import numpy as np

from ..errors import ExperimentFileError, describe
from .capped_read import CappedReadError, read_capped

MAX_DEPTH = 64  # no record of ours nests deeper than a handful of levels
MAX_RECORD_BYTES = 256 * 2**20  # far above any metadata.json a feasible experiment writes (see class 13's bound)
T = TypeVar("T")


def clean(value: Any) -> Any:
    """JSON-ready: dataclasses to dicts, numpy scalars to Python, NaN and infinities to None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: clean(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    return value


class FieldError(ValueError):
    """A parsed value that does not fit its type: ``where`` names the field."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"field {where}: {problem}")
        self.where, self.problem = where, problem


def _fail(where: str, expected: Any, value: Any) -> FieldError:
    return FieldError(where, f"expected {expected}, got {repr(value)[:60]}")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def decode(cls: Any, value: Any, where: str = "record") -> Any:
    """``value`` (parsed JSON) as an instance of the type ``cls``; raises :class:`FieldError` on a mismatch."""
    origin = typing.get_origin(cls)
    if cls is Any:
        return value
    if origin is Literal:
        choices = typing.get_args(cls)
        if isinstance(value, bool) or value not in choices:
            raise _fail(where, f"one of {list(choices)}", value)
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(cls)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return decode(option, value, where)
            except FieldError as exc:
                errors.append(exc)
        raise errors[0] if errors else _fail(where, cls, value)
    if origin is list:
        if not isinstance(value, list):
            raise _fail(where, "a list", value)
        (item,) = typing.get_args(cls)
        return [decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(where, "an object", value)
        _, item = typing.get_args(cls)
        return {str(k): decode(item, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        if not isinstance(value, dict):
            raise _fail(where, f"an object ({cls.__name__})", value)
        hints = _hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in value:
                kwargs[f.name] = decode(hints[f.name], value[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise FieldError(f"{where}.{f.name}", "is missing")
        return cls(**kwargs)
    if cls is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _fail(where, "a number", value)
    if cls is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(where, "an integer", value)
    if cls in (str, bool):
        if isinstance(value, cls):
            return value
        raise _fail(where, cls.__name__, value)
    raise TypeError(f"no decoder for {cls!r} at {where}")


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests lists/objects deeper than ``limit`` (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False


def read_bounded(path: Path, what: str, fix: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path`` if it holds at most ``max_bytes``; refused otherwise, before reading."""
    try:
        return read_capped(path, max_bytes)
    except CappedReadError as exc:
        raise ExperimentFileError(_refusal_message(exc, path, what, fix, max_bytes)) from None


def _refusal_message(refusal: CappedReadError, path: Path, what: str, fix: str, max_bytes: int) -> str:
    match refusal.reason:
        case "open":
            return f"cannot open {path} ({refusal.cause}); {fix}"
        case "read":
            return f"cannot read {path} ({refusal.cause}); {fix}"
        case "too_large":
            return (
                f"{path} is {refusal.size / 2**20:.0f} MiB, more than any {what} tempo_lens writes "
                f"(at most {max_bytes / 2**20:.0f} MiB); it was not read. {fix[:1].upper()}{fix[1:]}"
            )
        case "grew":
            return f"{path} grew past {max_bytes / 2**20:.0f} MiB while being read; {fix}"
        case _:
            return f"{path} is not a regular file; {fix}"


def parse_json(data: bytes | str, source: str, fix: str) -> Any:
    """Parsed JSON, or one clear error (bad UTF-8, bad JSON, nesting past :data:`MAX_DEPTH`)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text)
    except UnicodeDecodeError as exc:
        raise ExperimentFileError(f"{source} is not UTF-8 text (byte {exc.start}); {fix}") from None
    except RecursionError:
        raise ExperimentFileError(
            f"{source} nests deeper than {MAX_DEPTH} levels; no tempo_lens file does. {fix[:1].upper()}{fix[1:]}"
        ) from None
    except ValueError as exc:
        raise ExperimentFileError(f"{source} is corrupt: not valid JSON ({describe(exc)}); {fix}") from None
    if too_deep(value):
        raise ExperimentFileError(
            f"{source} nests deeper than {MAX_DEPTH} levels; no tempo_lens file does. {fix[:1].upper()}{fix[1:]}"
        )
    return value


def typed(cls: type[T], value: Any, source: str, fix: str) -> T:
    """:func:`decode` with a refusal naming the file and the field."""
    try:
        return decode(cls, value, cls.__name__)
    except FieldError as exc:
        raise ExperimentFileError(f"{source}: {exc}; {fix}") from None


def read_json(path: Path, what: str, fix: str, max_bytes: int = MAX_RECORD_BYTES) -> Any:
    """A JSON file read bounded and depth-checked (not yet typed)."""
    return parse_json(read_bounded(path, what, fix, max_bytes), str(path), fix)


def read_record(cls: type[T], path: Path, what: str, fix: str, max_bytes: int = MAX_RECORD_BYTES) -> tuple[T, Any]:
    """The file at ``path`` as a ``cls`` (typed) and as parsed JSON (for checksums), or a refusal naming file and field."""
    value = read_json(path, what, fix, max_bytes)
    return typed(cls, value, str(path), fix), value
