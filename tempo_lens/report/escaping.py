"""User-supplied text in the report is shown, never interpreted: names escaped for Markdown (and so HTML).

Experiment and run names, model names and folder names are written into the report's prose and
tables, outside code spans. :func:`plain` backslash-escapes every ASCII punctuation character that
Markdown or HTML could act on (links, images, emphasis, raw HTML, table pipes), leaving letters,
digits, spaces and ``. _ - / ,`` as they are, so a folder-safe name or a path reads unchanged. Prompts, generated
text and tokens go through :func:`.text.code` (a code span: shown literally). :func:`escape_user_text`
applies :func:`plain` to every name field of the metrics before they are rendered; the HTML renderer
(:func:`.document.markdown_renderer`) additionally turns off links, images and raw HTML altogether.
"""

from __future__ import annotations

import dataclasses
import re

from ..analysis.metrics.schema import Metrics

_ACTIVE = re.compile(r"([!\"#$%&'()*+:;<=>?@\[\\\]^`{|}~])")  # not / , . _ - (inert, and common in paths)


def plain(text: object) -> str:
    """``text`` as literal Markdown: active punctuation backslash-escaped, line breaks and tabs made visible."""
    shown = str(text).replace("\r", "").replace("\n", "⏎").replace("\t", "⇥")
    return _ACTIVE.sub(r"\\\1", shown)


def _replace(obj, **changes):
    return dataclasses.replace(obj, **{k: v for k, v in changes.items() if v is not None})


def escape_user_text(metrics: Metrics) -> Metrics:
    """A copy of ``metrics`` whose user-supplied names (experiments, runs, models, folders) are :func:`plain`."""
    single = metrics.single_run
    single = _replace(
        single,
        isolated_experiment=plain(single.isolated_experiment),
        visible_experiment=plain(single.visible_experiment),
        runs=[_replace(r, experiment=plain(r.experiment), name=plain(r.name)) for r in single.runs],
    )
    multi = metrics.multi_prompt
    if multi is not None:
        multi = _replace(
            multi, experiment=plain(multi.experiment), per_run=[_replace(r, run=plain(r.run)) for r in multi.per_run]
        )
    pruning = metrics.pruning
    if pruning is not None:
        pruning = _replace(pruning, experiment=plain(pruning.experiment))
    cross = [_replace(e, folder=plain(e.folder), model=_replace(e.model, name=plain(e.model.name))) for e in metrics.cross_model]
    versions = {plain(k): None if v is None else plain(v) for k, v in metrics.versions.items()}
    return dataclasses.replace(
        metrics,
        model=_replace(metrics.model, name=plain(metrics.model.name)),
        single_run=single,
        multi_prompt=multi,
        pruning=pruning,
        cross_model=cross,
        versions=versions,
    )
