"""One generation result on disk: ``result.save(dir)`` and ``load_result(dir)``, and its token table.

A folder holds ``result.json`` (the settings, the layout, token texts, thresholds, pruning events and a
checksum of the arrays) and, when attention was captured, ``attention.npz``. It is written atomically
(a temporary sibling folder renamed into place); an existing folder is replaced only with
``overwrite=True`` and only when it is a saved result. Loading checks the format version and checksum.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from ..capture import CapturedAttention
from ..errors import ExperimentFileError, InvalidInputError, describe
from ..io.atomic import MARKER, atomic_directory, folder_lock
from ..io.checksums import sha256_of
from ..io.records import read_record, typed
from ..io.saved_arrays import read_arrays
from ..layout import LayoutRecord, TokenLayout
from ..pruning import PruneEvent
from .config import GenerationConfig

if TYPE_CHECKING:
    from .result import GenerationResult

RESULT_FORMAT = 1
RESULT_FILE = "result.json"
ARRAYS_FILE = "attention.npz"
FIX = "save the result again"


@dataclass
class CaptureRecord:
    layers: list[int]
    steps: list[int]
    sha256: str


@dataclass
class PruneEventRecord:
    set_step: int
    at_step: int
    score: float | None
    kept: int
    pruned: list[int]


@dataclass
class ResultRecord:
    """The schema of ``result.json`` (read through :func:`tempo_lens.io.records.read_record`)."""

    format: Literal[1]
    kind: Literal["tempo_lens.result"]
    model: str
    prompt: str | None
    prompt_text: str
    config: dict[str, Any]
    layout: dict[str, Any]
    token_strings: list[str]
    thresholds: list[float]
    stop_reason: str
    n_layers: int
    n_heads: int
    clean_text: str
    pruning_events: list[PruneEventRecord]
    capture: CaptureRecord | None


def _is_saved_result(folder: Path) -> bool:
    return (
        folder.is_dir() and not folder.is_symlink() and {p.name for p in folder.iterdir()} <= {RESULT_FILE, ARRAYS_FILE, MARKER}
    )


def save_result(result: GenerationResult, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``result`` into ``directory`` atomically (refusing to replace anything but a saved result)."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(target.parent):  # writers of one folder never interleave
        if target.exists() or target.is_symlink():
            if not overwrite:
                raise ExperimentFileError(f"{target} already exists; pass overwrite=True to replace it, or choose another folder")
            if not _is_saved_result(target):
                raise ExperimentFileError(
                    f"{target} is not a saved result; overwrite only replaces saved results. Choose another folder"
                )
        _write(result, target)
    return target


def _write(result: GenerationResult, target: Path) -> None:
    with atomic_directory(target) as tmp:
        capture = result.capture
        arrays_sha = None
        if capture is not None:
            np.savez_compressed(tmp / ARRAYS_FILE, **{f"s{step}": capture.steps[step] for step in capture.step_ids})  # type: ignore[arg-type]
            arrays_sha = sha256_of(tmp / ARRAYS_FILE)
        record = {
            "format": RESULT_FORMAT,
            "kind": "tempo_lens.result",
            "model": result.model,
            "prompt": result.prompt,
            "prompt_text": result.prompt_text,
            "config": result.config.to_dict(),
            "layout": result.layout.to_dict(),
            "token_strings": result.token_strings,
            "thresholds": result.thresholds,
            "stop_reason": result.stop_reason,
            "n_layers": result.n_layers,
            "n_heads": result.n_heads,
            "clean_text": result.clean_text,
            "pruning_events": [vars(e) | {"pruned": list(e.pruned)} for e in result.pruning_events],
            "capture": None if capture is None else {"layers": capture.layers, "steps": capture.step_ids, "sha256": arrays_sha},
        }
        (tmp / RESULT_FILE).write_text(json.dumps(record, ensure_ascii=False, allow_nan=False), encoding="utf-8")


def read_result(directory: str | os.PathLike) -> dict[str, Any]:
    """The fields of a result saved by :meth:`GenerationResult.save`, checked, without the model."""
    directory = Path(directory)
    path = directory / RESULT_FILE
    if not path.is_file():
        raise ExperimentFileError(f"{directory} holds no {RESULT_FILE}; pass a folder written by result.save(...)")
    record, _ = read_record(ResultRecord, path, RESULT_FILE, FIX)
    typed(LayoutRecord, record.layout, str(path), FIX)
    try:
        layout = TokenLayout.from_dict(record.layout)
        config = GenerationConfig.from_mapping(record.config)
        if len(record.token_strings) != len(layout):
            raise ValueError(f"{len(record.token_strings)} token texts for {len(layout)} tokens")
        capture = None
        if record.capture is not None:
            if len(set(record.capture.layers)) != len(record.capture.layers) or any(
                not 0 <= l < record.n_layers for l in record.capture.layers
            ):
                raise ValueError(f"capture.layers {record.capture.layers[:8]} are not distinct layers of {record.n_layers}")
            arrays = directory / ARRAYS_FILE
            if not arrays.is_file() or sha256_of(arrays) != record.capture.sha256:
                raise ValueError(f"{ARRAYS_FILE} is missing or does not match its checksum")
            shapes = {}
            for step in record.capture.steps:
                r = layout.step_range(step)
                shapes[f"s{step}"] = (len(record.capture.layers), 1, record.n_heads, len(r), r.stop)
            loaded = read_arrays(arrays, shapes, FIX)
            capture = CapturedAttention(list(record.capture.layers), {s: loaded[f"s{s}"] for s in record.capture.steps})
    except (InvalidInputError, TypeError, ValueError, IndexError) as exc:
        raise ExperimentFileError(f"{path} does not fit its layout ({describe(exc)}); {FIX}") from None
    events = [
        PruneEvent(
            set_step=e.set_step,
            at_step=e.at_step,
            score=float("nan") if e.score is None else e.score,
            kept=e.kept,
            pruned=tuple(e.pruned),
        )
        for e in record.pruning_events
    ]
    return dict(
        model=record.model,
        prompt=record.prompt,
        prompt_text=record.prompt_text,
        config=config,
        layout=layout,
        token_strings=record.token_strings,
        thresholds=record.thresholds,
        stop_reason=record.stop_reason,
        n_layers=record.n_layers,
        n_heads=record.n_heads,
        capture=capture,
        clean_text=record.clean_text,
        pruning_events=events,
    )


TOKEN_COLUMNS = [
    "physical",
    "step",
    "rank",
    "logical_position",
    "token_id",
    "token",
    "prob",
    "parallel",
    "pruned",
    "pruned_at_step",
    "prune_score",
    "threshold",
]


def token_table(result: GenerationResult) -> pd.DataFrame:
    """One row per token, prompt included (step -1): where it sits, what it is, and its fate."""
    layout, rows = result.layout, []
    for i in range(len(layout)):
        step = layout.steps[i]
        rank = i - layout.step_range(step).start if step >= 0 else 0
        rows.append(
            [
                i,
                step,
                rank,
                layout.logical_positions[i],
                layout.token_ids[i],
                result.token_strings[i],
                layout.probs[i],
                layout.is_parallel(i),
                layout.is_pruned(i),
                layout.pruned_at[i] if layout.is_pruned(i) else None,
                layout.prune_scores[i] if layout.is_pruned(i) else None,
                result.thresholds[step] if step >= 0 else None,
            ]
        )
    return pd.DataFrame(rows, columns=TOKEN_COLUMNS)
