"""Data Summary: the experiments, settings, generated text and captured shapes behind the report."""

from __future__ import annotations

from ...analysis.metrics.schema import MODES, Metrics
from ..document import Document
from ..text import code


def render(doc: Document, metrics: Metrics) -> None:
    single, settings, model = metrics.single_run, metrics.settings, metrics.model
    doc.h(2, "Data Summary")
    doc.p("**Experiments Analyzed:**")
    used = [
        f"{single.isolated_experiment}: isolated run (parallel tokens cannot attend to each other)",
        f"{single.visible_experiment}: visible run (parallel tokens can attend to each other)",
    ]
    if metrics.multi_prompt:
        used.append(f"{metrics.multi_prompt.experiment}: multi-prompt validation ({metrics.multi_prompt.n_prompts} prompts)")
    if metrics.pruning:
        used.append(f"{metrics.pruning.experiment}: retroactive pruning")
    doc.bullets(used)
    doc.bullets(
        [
            f"**Prompt:** {code(settings.prompt)}",
            f"**Selection Threshold:** {settings.threshold}",
            f"**Max Tokens:** {settings.max_steps} (steps; max {settings.max_parallel} siblings per step, next token from the "
            f"{settings.next_token_source} of siblings)",
            f"**Model:** {model.name} ({model.n_layers} layers, {model.n_heads} heads, {model.n_kv_heads} KV heads)",
        ]
    )
    for mode in MODES:
        run = single.run(mode)
        if run is None:
            continue
        doc.p(f"**Generated ({mode}):** {code(run.text or '')}")
        doc.p(f"**Parallel Steps ({mode}):**")
        doc.bullets(
            [
                f"Step {s.step}: {s.size} parallel tokens (positions {s.first}-{s.last}; logical position {s.logical_position}): "
                + " / ".join(f"{code(t)} {p:.2f}" for t, p in zip(s.tokens, s.probs))
                for s in run.parallel_steps
            ]
            or ["none"]
        )
    iso = single.run("isolated")
    shapes = iso.capture_shapes if iso else {}
    if shapes:
        first = next(iter(shapes.values()))
        doc.p(
            f"**Attention Captured:** [{first[0]} layers, {first[1]} batch, {first[2]} heads, q queries (the step's siblings), K keys] per step; "
            + ", ".join(f"step {s}: q={v[3]}, K={v[4]}" for s, v in shapes.items())
        )
