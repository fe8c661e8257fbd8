"""One generation result on disk: ``result.save(dir)`` and ``load_result(dir)``, and its token table.

A folder holds ``result.json`` (the settings, the layout, token texts, thresholds, pruning events and a
checksum of the arrays) and, when attention was captured, ``attention.npz``. It is written atomically
(a temporary sibling folder renamed into place); an existing folder is replaced only with
``overwrite=True`` and only when it is a saved result. Loading checks the format version and checksum.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..atomic import atomic_directory
from ..capture import CapturedAttention
from ..checksums import sha256_of
from ..errors import ExperimentFileError
from ..layout import TokenLayout
from ..pruning import PruneEvent
from .config import GenerationConfig

if TYPE_CHECKING:
    from .result import GenerationResult

RESULT_FORMAT = 1
RESULT_FILE = "result.json"
ARRAYS_FILE = "attention.npz"


def save_result(result: "GenerationResult", directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``result`` into ``directory`` atomically (refusing to replace anything but a saved result)."""
    target = Path(directory)
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise ExperimentFileError(f"{target} already exists; pass overwrite=True to replace it, or choose another folder")
        if not (target.is_dir() and {p.name for p in target.iterdir()} <= {RESULT_FILE, ARRAYS_FILE}):
            raise ExperimentFileError(f"{target} is not a saved result; overwrite only replaces saved results. Choose another folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(target) as tmp:
        capture = result.capture
        arrays_sha = None
        if capture is not None:
            np.savez_compressed(tmp / ARRAYS_FILE, **{f"s{step}": capture.steps[step] for step in capture.step_ids})  # type: ignore[arg-type]
            arrays_sha = sha256_of(tmp / ARRAYS_FILE)
        record = {
            "format": RESULT_FORMAT, "kind": "tempo_lens.result", "model": result.model, "prompt": result.prompt,
            "prompt_text": result.prompt_text, "config": result.config.to_dict(), "layout": result.layout.to_dict(),
            "token_strings": result.token_strings, "thresholds": result.thresholds, "stop_reason": result.stop_reason,
            "n_layers": result.n_layers, "n_heads": result.n_heads, "clean_text": result.clean_text,
            "pruning_events": [vars(e) | {"pruned": list(e.pruned)} for e in result.pruning_events],
            "capture": None if capture is None else {"layers": capture.layers, "steps": capture.step_ids, "sha256": arrays_sha},
        }
        (tmp / RESULT_FILE).write_text(json.dumps(record, ensure_ascii=False, allow_nan=False), encoding="utf-8")
    return target


def load_result(directory: str | os.PathLike) -> "GenerationResult":
    """A result saved by :meth:`GenerationResult.save`, checked, without the model."""
    from .result import GenerationResult

    directory = Path(directory)
    path = directory / RESULT_FILE
    if not path.is_file():
        raise ExperimentFileError(f"{directory} holds no {RESULT_FILE}; pass a folder written by result.save(...)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ExperimentFileError(f"{path} is corrupt ({exc}); save the result again") from None
    if not isinstance(record, dict) or record.get("kind") != "tempo_lens.result" or record.get("format") != RESULT_FORMAT:
        version = record.get("format") if isinstance(record, dict) else None
        raise ExperimentFileError(f"{path} is not a tempo_lens result of format {RESULT_FORMAT} (found {version!r}); save it again with this version")
    try:
        capture = None
        if record["capture"] is not None:
            arrays = directory / ARRAYS_FILE
            if not arrays.is_file() or sha256_of(arrays) != record["capture"]["sha256"]:
                raise ValueError(f"{ARRAYS_FILE} is missing or does not match its checksum")
            with np.load(arrays) as npz:
                steps = {int(s): npz[f"s{s}"] for s in record["capture"]["steps"]}
            capture = CapturedAttention(list(record["capture"]["layers"]), steps)
        events = [PruneEvent(**{**e, "pruned": tuple(e["pruned"])}) for e in record["pruning_events"]]
        return GenerationResult(
            model=record["model"], prompt=record["prompt"], prompt_text=record["prompt_text"],
            config=GenerationConfig.from_mapping(record["config"]), layout=TokenLayout.from_dict(record["layout"]),
            token_strings=record["token_strings"], thresholds=record["thresholds"], stop_reason=record["stop_reason"],
            n_layers=record["n_layers"], n_heads=record["n_heads"], capture=capture, clean_text=record["clean_text"],
            pruning_events=events,
        )
    except (KeyError, TypeError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ExperimentFileError(f"{directory} is damaged ({exc}); save the result again") from None


TOKEN_COLUMNS = ["physical", "step", "rank", "logical_position", "token_id", "token", "prob", "parallel", "pruned",
                 "pruned_at_step", "prune_score", "threshold"]


def token_table(result: "GenerationResult") -> pd.DataFrame:
    """One row per token, prompt included (step -1): where it sits, what it is, and its fate."""
    layout, rows = result.layout, []
    for i in range(len(layout)):
        step = layout.steps[i]
        rank = i - layout.step_range(step).start if step >= 0 else 0
        rows.append([
            i, step, rank, layout.logical_positions[i], layout.token_ids[i], result.token_strings[i], layout.probs[i],
            layout.is_parallel(i), layout.is_pruned(i), layout.pruned_at[i] if layout.is_pruned(i) else None,
            layout.prune_scores[i] if layout.is_pruned(i) else None, result.thresholds[step] if step >= 0 else None,
        ])
    return pd.DataFrame(rows, columns=TOKEN_COLUMNS)
