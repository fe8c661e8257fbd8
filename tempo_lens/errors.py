"""Errors that name the problem and the fix.

Every error tempo_lens raises on purpose derives from :class:`TempoLensError`, so the CLI can print
one clear line for it instead of a traceback from deep inside a library.
"""

from __future__ import annotations

import errno as errno_names
import os


class TempoLensError(Exception):
    """Base class of all deliberate tempo_lens errors."""


class InvalidInputError(TempoLensError, ValueError):
    """An argument is out of range or malformed (threshold, prompt, steps, mode, ...)."""


class OutOfRangeError(InvalidInputError, IndexError):
    """A step, rank or layer number outside what exists (an IndexError too, for callers that catch that)."""


class NonFiniteLogitsError(TempoLensError, FloatingPointError):
    """A forward gave NaN or infinite logits (a hook, the weights or the dtype overflowed); generation stops there."""


class ModelUnavailableError(TempoLensError, OSError):
    """A model name or path cannot be loaded here (unknown, offline, or not a supported architecture)."""


class ExperimentFileError(TempoLensError, OSError):
    """An experiment folder is missing, corrupt, truncated, edited or of another format version."""


class ConfigError(TempoLensError, ValueError):
    """An experiment config file has missing, misspelled or invalid keys."""


def describe(exc: BaseException) -> str:
    """An exception in words that are never empty: its message, else its type (``EOFError``), with the path and
    the system's words for an OSError (``Permission denied: 'x.npz'``)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        words = exc.strerror or os.strerror(exc.errno)
        if exc.errno == errno_names.EFBIG:
            words += " (past the size limit for one file: `ulimit -f`, or the file system's largest file)"
        return f"{words}: {exc.filename!r}" if exc.filename else words
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
