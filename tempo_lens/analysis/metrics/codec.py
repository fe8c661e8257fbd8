"""JSON for the report's dataclass records (``metrics.json``): :mod:`tempo_lens.io.records` with the report's fix.

The metrics are written by :func:`encode` and read back by :func:`decode` into the same dataclasses,
so the renderer works on typed values and a file that does not fit the schema fails with a message
naming the field, not somewhere deep in the prose. The cleaning and decoding rules live once, in
:mod:`tempo_lens.io.records`.
"""

from __future__ import annotations

from typing import Any

from ...errors import ExperimentFileError
from ...io.records import FieldError, clean
from ...io.records import decode as decode_record

FIX = "re-run `tempo-lens analyze`"
encode = clean


def decode(cls: Any, value: Any, where: str = "metrics") -> Any:
    """``value`` (parsed JSON) as an instance of the type ``cls``; raises ExperimentFileError naming the field."""
    try:
        return decode_record(cls, value, where)
    except FieldError as exc:
        raise ExperimentFileError(f"metrics {exc}; {FIX}") from None


__all__ = ["FIX", "clean", "decode", "encode"]
