"""JSON for dataclass records: encode (NaN and numpy scalars cleaned) and decode back by the type hints.

Used for ``metrics.json``: the metrics are written by :func:`encode` and read back by :func:`decode`
into the same dataclasses, so the renderer works on typed values and a file that does not fit the
schema fails with a message naming the field, not somewhere deep in the prose.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from functools import lru_cache
from typing import Any, Union

import numpy as np

from ..errors import ExperimentFileError


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


encode = clean


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fail(where: str, expected: Any, value: Any) -> ExperimentFileError:
    shown = repr(value)[:60]
    return ExperimentFileError(f"metrics field {where}: expected {expected}, got {shown}; re-run `tempo-lens analyze`")


def decode(cls: Any, value: Any, where: str = "metrics") -> Any:
    """``value`` (parsed JSON) as an instance of the type ``cls``; raises ExperimentFileError on a mismatch."""
    origin = typing.get_origin(cls)
    if cls is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(cls)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return decode(option, value, where)
            except ExperimentFileError as exc:
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
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                raise ExperimentFileError(f"metrics field {where}.{f.name} is missing; re-run `tempo-lens analyze`")
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
