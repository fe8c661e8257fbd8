"""Cross-model: the same measurements on every zoo model, with intervals over prompts."""

from __future__ import annotations

from collections.abc import Callable

from ...analysis.metrics.causal_schema import read_causal
from ...analysis.metrics.cross_model import folder_name, zoo_names
from ...analysis.metrics.schema import CrossModelEntry, Interval, Metrics
from ...analysis.verdicts import NOT_MEASURED, depth_profile, gap_from_definition, interval_verdict, ordering_reliable
from ...figures import report as plots
from ..document import Document
from ..readings import coefficient_interval, distance_verdict, knockout_word, standout_text
from ..text import ci_text, difference, num, p_clause, parameters, times

Getter = Callable[[CrossModelEntry], "Interval | None"]


def _mode(key: str, mode: str) -> Getter:
    def get(entry: CrossModelEntry) -> Interval | None:
        m = entry.multi.mode(mode) if entry.multi else None
        return getattr(m, key) if m else None

    return get


def _pair(key: str) -> Getter:
    return lambda entry: entry.multi.pair(key) if entry.multi else None


def _knockout(mode: str, key: str = "ratio") -> Getter:
    def get(entry: CrossModelEntry) -> Interval | None:
        causal = read_causal(entry.multi)
        block = causal.knockout.block(mode) if causal else None
        return getattr(block, key) if block else None

    return get


def _coefficient(mode: str) -> Getter:
    return lambda entry: coefficient_interval(entry.multi.regression_of(mode)) if entry.multi else None


MEASURES: tuple[tuple[str, Getter], ...] = (
    ("Ratio, isolated", _mode("ratio", "isolated")),
    ("Ratio, visible", _mode("ratio", "visible")),
    ("Ratio, reference script's definition, isolated", _mode("script_ratio", "isolated")),
    ("Ratio, reference script's definition, visible", _mode("script_ratio", "visible")),
    ("Ratio without the first token, isolated", _mode("ratio_no_sink", "isolated")),
    ("Set mass / token mean, isolated", _mode("set_ratio", "isolated")),
    ("Ratio at unique positions, isolated", _mode("ratio_unique", "isolated")),
    ("Shared - unique positions, isolated (paired)", _pair("shared_minus_unique_isolated")),
    ("Isolated - visible, same tokens (paired)", _pair("same_tokens")),
    ("Isolated - visible, separate generations (paired)", _pair("isolated_minus_visible")),
    ("Isolated - visible, reference script's definition (paired)", _pair("script_isolated_minus_visible")),
    ("Generated-only ratio, isolated", _mode("ratio_generated", "isolated")),
    ("Distance-matched ratio, isolated", _mode("ratio_matched", "isolated")),
    (
        "Regression: parallel coefficient with distance and token kind fixed, isolated (log factor; null 0)",
        _coefficient("isolated"),
    ),
    ("Knock-out KL(parallel) / KL(matched), isolated (geometric mean over prompts)", _knockout("isolated")),
    ("Knock-out KL(parallel) / KL(matched), visible (geometric mean over prompts)", _knockout("visible")),
    ("Knock-out KL(parallel) - KL(matched), isolated (nats; null 0)", _knockout("isolated", "difference")),
)


def _cell(ci: Interval | None) -> str:
    if ci is None or ci.mean is None:
        return "not measured"
    test = "" if ci.p is None else f"; {p_clause(ci.p)}"
    return f"{ci_text(ci)}{test}: {interval_verdict(ci).phrase()}"


def _depth_cell(entry: CrossModelEntry) -> list[str]:
    depth = {d.depth: d for d in (entry.multi.depth if entry.multi else [])}
    cells = [ci_text(depth[d].entropy, 2) if d in depth else "n/a" for d in ("early", "middle", "late")]
    means = {d: depth[d].entropy.mean if d in depth else None for d in ("early", "middle", "late")}
    profile = depth_profile(means["early"], means["middle"], means["late"])
    if profile != NOT_MEASURED:
        measured = {d: mean for d, mean in means.items() if mean is not None}  # every third, as the profile is measured
        high, low = max(measured, key=measured.__getitem__), min(measured, key=measured.__getitem__)
        reliable = ordering_reliable(depth[high].entropy, depth[low].entropy)
        profile += "" if reliable else f" (not reliable: the {high} and {low} intervals overlap)"
    return cells + [profile]


def _reading(entries: list[CrossModelEntry]) -> list[str]:
    """For the key measures, the models grouped by the interval's word."""
    out = []
    for label, get in MEASURES[:1] + MEASURES[4:5] + MEASURES[6:9] + MEASURES[10:]:
        groups: dict[str, list[str]] = {}
        for entry in entries:
            groups.setdefault(interval_verdict(get(entry)).phrase(), []).append(entry.folder)
        out.append(f"**{label}:** " + "; ".join(f"{word}: {', '.join(names)}" for word, names in groups.items()))
    return out


def _half_width(ci: Interval | None) -> str:
    return "n/a" if ci is None or ci.lo is None or ci.hi is None else f"±{(ci.hi - ci.lo) / 2:.3f}"


def _power_rows(entries: list[CrossModelEntry]) -> list[list[str | int]]:
    """Per model: runs with a measured step, and the interval half-widths of the ratios and the coefficient."""
    rows = []
    for e in entries:
        m = {mode: e.multi.mode(mode) if e.multi else None for mode in ("isolated", "visible")}
        measured = " / ".join(f"{x.n_runs_with_ratio} of {x.n_runs}" if x else "n/a" for x in m.values())
        iso = m["isolated"]
        rows.append(
            [
                e.folder,
                e.multi.n_prompts if e.multi else "not run",
                measured,
                *(
                    _half_width(getattr(iso, k) if iso else None)
                    for k in ("ratio", "ratio_no_sink", "ratio_generated", "ratio_matched")
                ),
                _half_width(_coefficient("isolated")(e)),
            ]
        )
    return rows


def render(doc: Document, metrics: Metrics) -> None:
    entries = metrics.cross_model
    doc.h(2, "Cross-model")
    if not entries:
        doc.p(
            "Not run. `make analyze-models` runs the exp1 pair and the multi-prompt set, with their controls, on every installed "
            f"zoo model ({', '.join(zoo_names())}) and adds this section."
        )
        return
    missing = [n for n in zoo_names() if folder_name(n) not in {e.folder for e in entries}]
    doc.p(
        "The same configs (the single-prompt pair and the multi-prompt set with the unique-position and toggled-mask controls) on "
        "each model, each in its own folder with its own report (`analyses/models/NAME/report/FINDINGS.md`). Across prompts: one "
        "value per run, 95 % bootstrap interval, sign-flip p against the null; direction words from the interval, weakened when "
        "the test does not confirm (see *How the words are chosen*)."
        + (f" Zoo models without results here (not installed, or not requested): {', '.join(missing)}." if missing else "")
    )
    doc.table(
        ["Model", "Parameters (as loaded)", "Layers", "Heads", "KV heads", "Prompts"],
        [
            [
                e.folder if e.model.name == e.folder else f"{e.folder} ({e.model.name})",
                parameters(e.model.n_params),
                e.model.n_layers,
                e.model.n_heads,
                e.model.n_kv_heads,
                e.multi.n_prompts if e.multi else "not run",
            ]
            for e in entries
        ],
    )
    doc.p("**Across prompts** (mean [95 % CI] (n); p; direction):")
    doc.table(["Measure", *(e.folder for e in entries)], [[label, *(_cell(get(e)) for e in entries)] for label, get in MEASURES])
    doc.p("**Reading** (models grouped by the interval's word):")
    artifact = {
        e.folder: gap_from_definition(_pair("script_isolated_minus_visible")(e), _pair("isolated_minus_visible")(e))
        for e in entries
    }
    doc.bullets(
        _reading(entries)
        + [
            "**The reference's isolated - visible gap:** reliably negative under the reference script's definition and not under "
            "the intended one (so it comes from the definition) on: "
            + (", ".join(n for n, v in artifact.items() if v) or "none")
            + "; not shown on: "
            + (", ".join(n for n, v in artifact.items() if not v) or "none")
            + ". This covers the models "
            "run here: the script's definition produces a negative gap on them, which makes the definition a sufficient "
            "explanation of the reference's number. It does not show what cogito-3B's own gap would be under the intended "
            "definition, which was never measured.",
            '**Does "more attention without the first token" survive distance and token kind?** '
            + "; ".join(f"{e.folder}: {distance_verdict(None, e.multi)[0]}" for e in entries)
            + ' (every control still "more": survives; none: does not survive; otherwise partly; see *2b* for the rule).',
            "**Which reading the knock-out supports** (isolated / visible; see *Intervention: the Knock-out*): "
            + "; ".join(
                f"{e.folder}: {knockout_word(_knockout('isolated')(e))} / {knockout_word(_knockout('visible')(e))}"
                for e in entries
            )
            + ".",
            "**How the attention measures line up** (isolated; the knock-out ratio / the distance-matched attention ratio / "
            "the regression coefficient, each the interval's word): "
            + "; ".join(
                f"{e.folder}: "
                + " / ".join(
                    interval_verdict(get(e)).word
                    for get in (_knockout("isolated"), _mode("ratio_matched", "isolated"), _coefficient("isolated"))
                )
                for e in entries
            )
            + ".",
        ]
    )
    doc.p(
        "**Power** (how many runs had a measured step, isolated / visible; half-widths of the 95 % intervals over prompts, "
        "isolated). A half-width is half the interval's length: the smaller, the more the prompt set can separate models."
    )
    doc.table(
        [
            "Model",
            "Prompts",
            "Runs with a measured step (isolated / visible)",
            "Ratio",
            "Ratio without first token",
            "Generated-only ratio",
            "Distance-matched ratio",
            "Regression coefficient",
        ],
        _power_rows(entries),
    )
    doc.p(
        "**Heads that stand out** (isolated runs, per (layer, head) as in *2b*: the largest first-token share, and the largest "
        "and smallest parallel coefficient with distance and token kind fixed, as a factor):"
    )
    doc.bullets([f"**{e.folder}:** {standout_text(e.multi.head_map) if e.multi else 'not run'}" for e in entries])
    doc.p(
        "**The single-prompt pair** (point estimates, one prompt): the ratio under both definitions and the isolated - visible gap."
    )
    doc.table(
        [
            "Model",
            "Intended: isolated / visible",
            "Intended: isolated - visible",
            "Script's: isolated / visible",
            "Script's: isolated - visible",
        ],
        [
            [
                e.folder,
                f"{times(e.exp1_ratio.isolated)} / {times(e.exp1_ratio.visible)}",
                num(difference(e.exp1_ratio.isolated, e.exp1_ratio.visible)),
                f"{times(e.exp1_script_ratio.isolated)} / {times(e.exp1_script_ratio.visible)}",
                num(difference(e.exp1_script_ratio.isolated, e.exp1_script_ratio.visible)),
            ]
            for e in entries
        ],
    )
    doc.p(
        "**Entropy by depth third** (mean layer entropy of each isolated run over its steps, nats; across prompts) and the pattern "
        "(funnel = middle third most diffuse, late third most focused):"
    )
    doc.table(["Model", "Early", "Middle", "Late", "Pattern"], [[e.folder, *_depth_cell(e)] for e in entries])
    doc.p("**Head groups** (single-prompt isolated run, step 1, the grouping rule of Key Findings 4):")
    doc.table(
        ["Model", "Long-range", "Balanced", "Diffuse"],
        [[e.folder, *(e.head_groups.get(g, 0) for g in ("Long-range", "Balanced", "Diffuse"))] for e in entries],
    )
    doc.figure(
        "models",
        plots.model_comparison_plot(entries, metrics.reference),
        "Ratios by model, mean across prompts with 95 % intervals, beside the reference report's quoted values (cogito 3B, "
        "one prompt, the reference script's definition)",
    )
