"""The report's head: title, date, experiments and model, and how the words are chosen."""

from __future__ import annotations

import time

from ...analysis.metrics.schema import Metrics
from ...analysis.verdicts import TOLERANCE
from ..document import Document

RULES = (
    f"**How the words are chosen** (`docs/definitions.md`): a single-run value is judged from its point estimate, and "
    f"a difference smaller than {TOLERANCE} (in ratio units) from the null value is called *minimal*. Wherever a value has a "
    "95 % bootstrap interval (across prompts: one value per run, never steps or tokens of one run), the interval decides: "
    "*less* / *more* only when it excludes the null value (1 for ratios, 0 for differences), otherwise *no reliable "
    "difference*. The sign-flip permutation p-value (on log ratios for ratios) is reported beside it and can only weaken the "
    "interval's word: when the interval excludes the null but p is not below 0.05, or the mean log ratio lies on the other "
    "side of the null, the report says so. A ratio whose denominator (a mean attention weight) is below 1e-6 is not "
    "measurable: n/a, and the runs without a measurable value are counted (n/a in k of n runs)."
)


TITLE = "Mechanistic Interpretability Findings: TEMPO Attention Analysis"


def render(doc: Document, metrics: Metrics) -> None:
    """The lines under the title: date, what was analysed on which model, and how the words are chosen."""
    single, model = metrics.single_run, metrics.model
    model_label = f"{model.name} ({model.dtype or 'dtype not recorded'}; {model.n_layers} layers, {model.n_heads} heads, {model.n_kv_heads} KV heads)"
    doc.p(f"**Date:** {time.strftime('%Y-%m-%d')}")
    doc.p(
        "**Analysis Type:** Attention pattern analysis from captured attention weight matrices (every step's forward pass, all siblings as queries)"
    )
    doc.p(f"**Experiments:** {single.isolated_experiment} vs {single.visible_experiment} on {model_label}")
    doc.p(
        "**Reproduces:** the reference findings report (cogito 3B). Every number below is computed by `tempo-lens analyze` from this "
        "run's experiment files; reference values appear only where labelled as such."
    )
    doc.p(RULES)
