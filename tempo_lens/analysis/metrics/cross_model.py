"""The cross-model study's data: one summary per model, read from that model's own ``metrics.json``.

``tempo-lens analyze FOLDER --models ...`` (``make analyze-models``) writes each model's runs and
report under ``FOLDER/models/NAME/``; :func:`collect_entries` gathers their metrics into the
:class:`~.schema.CrossModelEntry` list of the main report's Cross-model section.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ...errors import ExperimentFileError
from .schema import ByMode, CrossModelEntry, Metrics, read_metrics

ZOO_NAMES = ("smollm2-135m", "qwen2.5-0.5b", "qwen2.5-1.5b", "gemma-3-270m")


def zoo_names() -> list[str]:
    """The zoo's model names (from :mod:`tempo_lens.models.zoo` when it is present)."""
    try:
        from ...models.zoo import ZOO  # type: ignore[attr-defined]  # local: a build without the zoo falls back to ZOO_NAMES
    except ImportError:
        return list(ZOO_NAMES)
    return list(ZOO)


def folder_name(model: str) -> str:
    """A folder name for a model name or path: its last path part, unsafe characters replaced by ``-``."""
    base = Path(model.rstrip("/")).name or "model"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip(".-") or "model"


def model_folders(models: list[str]) -> dict[str, str]:
    """Each model's folder under ``models/``: :func:`folder_name`, made unique with a short hash where two models share it.

    A zoo name and a local folder of the same base name (``qwen2.5-0.5b`` and ``./ckpt/qwen2.5-0.5b``)
    get two folders, so neither overwrites the other.
    """
    bases = {model: folder_name(model) for model in dict.fromkeys(models)}
    shared = Counter(bases.values())
    return {
        model: base if shared[base] == 1 else f"{base}-{hashlib.sha1(model.encode('utf-8', 'replace')).hexdigest()[:8]}"
        for model, base in bases.items()
    }


def entry_from_metrics(metrics: Metrics, folder: str) -> CrossModelEntry:
    single = metrics.single_run
    first = single.script_chain[0] if single.script_chain else None
    return CrossModelEntry(
        folder=folder,
        model=metrics.model,
        exp1_ratio=single.mode_averages,
        exp1_script_ratio=ByMode(isolated=first.isolated, visible=first.visible) if first else ByMode(),
        head_groups=dict(Counter(h.group for h in single.heads)),
        depth=single.depth,
        multi=metrics.multi_prompt,
    )


def collect_entries(models_dir: Path, progress: Callable[[str], None] = print) -> list[CrossModelEntry]:
    """Every ``models_dir/NAME/report/metrics.json``, in zoo order then by name; unreadable ones are skipped with a message."""
    if not models_dir.is_dir():
        return []
    order = {folder_name(n): i for i, n in enumerate(zoo_names())}
    entries = []
    for folder in sorted(models_dir.iterdir(), key=lambda p: (order.get(p.name, len(order)), p.name)):
        path = folder / "report" / "metrics.json"
        if not path.is_file():
            continue
        try:
            entries.append(entry_from_metrics(read_metrics(path), folder.name))
        except ExperimentFileError as exc:
            progress(f"cross-model: skipping {folder.name}: {exc}")
    return entries
