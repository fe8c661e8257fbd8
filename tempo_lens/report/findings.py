"""FINDINGS.md: the reference report's sections and tables, every number and direction word from metrics.

Direction words follow SPEC §7: single-run tables use the point estimate; the multi-prompt section
uses the 95 % bootstrap interval ("no reliable difference" when it contains the null value).
Speculative sections of the reference report appear as hypotheses, each followed by what this
run's controls say about it.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import pandas as pd

from ..analysis import direction_from_estimate, direction_from_interval, entropy_by_step, head_specialisation, ratio_table
from ..analysis.stats import LESS, MORE
from .. import figures
from .document import Document
from .metrics import MINIMAL_DIFFERENCE, ReportInputs, _generated


def num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def times(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}x"


def interpretation(ratio: float | None) -> str:
    if ratio is None:
        return "not measured"
    change = round(abs(1 - ratio) * 100)
    if change == 0:
        return "equal attention"
    return f"{change}% {'less' if ratio < 1 else 'more'} attention"


def ci_text(ci: dict | None, digits: int = 3) -> str:
    if not ci or ci.get("mean") is None:
        return "n/a"
    if ci.get("lo") is None:
        return f"{num(ci['mean'], digits)} (n = {ci.get('n')})"
    return f"{num(ci['mean'], digits)} [{num(ci['lo'], digits)}, {num(ci['hi'], digits)}] (n = {ci.get('n')})"


def p_text(p: float | None) -> str:
    return "n/a" if p is None else (f"{p:.3f}" if p >= 0.001 else "< 0.001")


def interval_word(ci: dict | None, null: float) -> str:
    if not ci:
        return "not measured"
    lo, hi = ci.get("lo"), ci.get("hi")
    return direction_from_interval(float("nan") if lo is None else lo, float("nan") if hi is None else hi, null)


def layer_list(layers: Sequence[int]) -> str:
    """``[2, 16, 17, 18, 20]`` -> ``2, 16-18, 20``."""
    layers = sorted(int(l) for l in layers)
    parts, start = [], None
    for i, layer in enumerate(layers):
        if start is None:
            start = layer
        if i + 1 == len(layers) or layers[i + 1] != layer + 1:
            parts.append(str(start) if start == layer else f"{start}-{layer}")
            start = None
    return ", ".join(parts) if parts else "none"


def value_range(values: Sequence[float], digits: int = 2) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    lo, hi = min(values), max(values)
    return num(lo, digits) if round(lo, digits) == round(hi, digits) else f"{num(lo, digits)}-{num(hi, digits)}"


def render_findings(metrics: dict, inputs: ReportInputs) -> Any:
    single = metrics["single_run"]
    model = metrics["model"]
    settings = metrics["settings"]
    reference = metrics["reference"]
    multi = metrics.get("multi_prompt")
    pruning = metrics.get("pruning")
    averages = single["mode_averages"]
    ratios = single["ratios"]
    model_label = f"{model['name']} ({model['n_layers']} layers, {model['n_heads']} heads, {model['n_kv_heads']} KV heads)"

    doc = Document("Mechanistic Interpretability Findings: TEMPO Attention Analysis")
    doc.p(f"**Date:** {time.strftime('%Y-%m-%d')}")
    doc.p("**Analysis Type:** Attention pattern analysis from captured attention weight matrices (every step's forward pass, all siblings as queries)")
    doc.p(f"**Experiments:** exp1_isolated vs exp1_visible on {model_label}")
    doc.p(f"**Reproduces:** the reference findings report (cogito 3B). Every number below is computed by `make analyze` from this run's experiment files; reference values appear only where labelled as such.")

    # ---- executive summary ----------------------------------------------------------------------
    all_ratios = [r["ratio"] for r in ratios]
    words = {direction_from_estimate(r) for r in all_ratios}
    doc.h(2, "Executive Summary")
    if not all_ratios:
        doc.p("No step had an earlier parallel set, so the parallel : non-parallel ratio could not be measured in this run.")
    else:
        consistency = "consistently" if len(words) == 1 else "at most steps, not all,"
        overall = direction_from_estimate(sum(all_ratios) / len(all_ratios))
        modes_text = ", ".join(f"{mode} {times(averages.get(mode))}" for mode in ("isolated", "visible"))
        doc.p(
            f"In this run parallel tokens {consistency} receive **{overall.upper()} attention** than non-parallel tokens: "
            f"per-step ratios {value_range(all_ratios, 3)}x, mode averages {modes_text}. "
            + _mode_effect_sentence(single)
        )
        sink = single["no_sink_averages"]
        doc.p(
            "The controls the reference lacked change the reading: leaving out the first token (the attention sink) gives "
            f"isolated {times(sink.get('isolated'))} and visible {times(sink.get('visible'))} "
            f"(parallel tokens get {direction_from_estimate(_mean(sink.values()))} attention than an average non-sink token), "
            + _baseline_sentence(single, multi)
        )
        if multi:
            iso = multi["modes"]["isolated"]["ratio"]
            doc.p(
                f"Across {multi['n_prompts']} prompts the isolated ratio is {ci_text(iso)} (mean, 95 % bootstrap interval): "
                f"{interval_word(iso, 1.0)} than non-parallel tokens; without the sink it is "
                f"{ci_text(multi['modes']['isolated']['ratio_no_sink'])}: {interval_word(multi['modes']['isolated']['ratio_no_sink'], 1.0)}."
            )

    # ---- key findings ---------------------------------------------------------------------------
    doc.h(2, "Key Findings")
    overall_word = direction_from_estimate(_mean(all_ratios)) if all_ratios else "not measured"
    heading = {LESS: "Reduced", MORE: "Increased"}.get(overall_word, "Unchanged")
    doc.h(3, f"1. Parallel Tokens Receive {heading} Attention")
    doc.p("Reference-compatible definition (SPEC §4): attention averaged over layers, batch, heads and the step's queries; "
          "mean over earlier parallel-set tokens divided by the mean over every other earlier token (prompt and BOS included). "
          "Every step with an earlier parallel set is listed.")
    doc.table(["Step", "Mode", "Parallel:Non-Parallel Ratio", "Interpretation"],
              [[r["step"], r["mode"].upper(), times(r["ratio"]), interpretation(r["ratio"])]
               for r in sorted(ratios, key=lambda r: (r["step"], r["mode"]))])
    if single["missing_steps"]:
        missing = sorted({(r["step"], r["missing_reason"]) for r in single["missing_steps"]})
        doc.p("Not measured: " + "; ".join(f"step {s} ({reason})" for s, reason in missing) + ".")
    doc.p("**Average Ratios** (mean of the per-step ratios):")
    doc.bullets([f"**{mode.capitalize()} mode:** {times(averages.get(mode))} ({num((averages.get(mode) or float('nan')) * 100, 0)}% of non-parallel attention)"
                 for mode in ("isolated", "visible")])
    doc.p(f"**Interpretation:** parallel tokens receive {overall_word} attention per token than non-parallel tokens in both modes' averages "
          f"({'; '.join(f'{m}: {direction_from_estimate(_nan(averages.get(m)))}' for m in ('isolated', 'visible'))}). "
          "Whether this is a property of shared positions, of the attention sink, or of the tokens themselves is what the controls below test.")

    eff = single["isolation_effect"]
    diff = eff["difference"]
    minimal = diff is not None and abs(diff) < MINIMAL_DIFFERENCE
    doc.h(3, f"2. Isolation Mode Has {'Minimal' if minimal else 'a Measurable'} Effect on Attention to Prior Parallel Tokens")
    doc.bullets([
        f"**Isolated:** {times(eff['isolated'])} ratio",
        f"**Visible:** {times(eff['visible'])} ratio",
        f"**Difference (isolated - visible):** {num((diff or float('nan')) * 100, 1)} points "
        f"({'minimal: under ' + str(int(MINIMAL_DIFFERENCE * 100)) + ' points' if minimal else 'isolated ' + direction_from_estimate(diff, 0.0) + ' than visible'})",
        f"**Same tokens, mask toggled** (the isolated run replayed with the visible mask): {times(eff['isolated_tokens_visible_mask'])}",
    ])
    intra = single["intra_step"]["summary"]
    doc.p(
        "Isolation only changes what a sibling sees of its own step. Measured directly (every sibling is a query here): "
        f"siblings after the first pay {num(_get(intra, 'visible', 'to_siblings_later'))} of their attention to earlier siblings in visible mode "
        f"and {num(_get(intra, 'isolated', 'to_siblings_later'))} in isolated mode (0 by construction). Attention to *previous* steps' parallel "
        "tokens is a separate quantity; the mode changes it only through the different context the later tokens were computed in."
    )

    entropy = single["entropy"]
    layers = pd.DataFrame(entropy["layers"])
    doc.h(3, "3. Layer-Wise Attention Patterns")
    doc.p(f"**Entropy Analysis (Step {entropy['step']}, {entropy['mode']} run):** natural log, unnormalised, averaged over heads and queries. "
          "The 3 lowest-entropy layers are most focused, the 3 highest most diffuse, the rest mid.")
    rows = []
    for group, meaning in (("most focused", "Sharp, concentrated attention"), ("mid", "Intermediate attention"), ("most diffuse", "Broad, spread attention")):
        part = layers[layers["group"] == group]
        rows.append([group.title().replace("Mid", "Mid-Range"), layer_list(part["layer"]), value_range(part["entropy"].tolist()), meaning])
    doc.table(["Layer Type", "Layers", "Entropy Range", "Interpretation"], rows)
    depth = pd.DataFrame(entropy["depth"])
    doc.p("**Key Observations:**")
    doc.bullets([f"**{d['depth'].capitalize()} layers ({d['first_layer']}-{d['last_layer']}):** entropy {value_range([d['min'], d['max']])} (mean {num(d['mean'], 2)})"
                 for d in entropy["depth"]])
    if len(depth) == 3:
        highest = depth.loc[depth["mean"].idxmax(), "depth"]
        lowest = depth.loc[depth["mean"].idxmin(), "depth"]
        funnel = highest == "middle" and lowest == "late"
        doc.p(f"**Pattern:** the {highest} third has the highest mean entropy and the {lowest} third the lowest, so the reference's "
              f"funnel pattern (middle layers most diffuse, late layers most focused) {'holds' if funnel else 'does not hold'} in this model"
              + ("." if funnel else f"; here attention {'narrows with depth' if highest == 'early' and lowest == 'late' else 'follows another profile'}."))

    heads = pd.DataFrame(single["heads"]["rows"])
    doc.h(3, "4. Attention Head Specialization")
    doc.p(f"**Analysis of {len(heads)} attention heads** (step {single['heads']['step']}, averaged over layers). Recent = mean attention over each query's "
          "last 3 visible keys, distant = over its other visible keys. Grouping rule (deterministic): with the heads' entropy range "
          "[lo, hi], Diffuse = entropy in the top third of the range; Long-range = bottom third and distant > recent; Balanced = the rest.")
    rows = []
    for group, meaning in (("Long-range", "Focus on distant context"), ("Balanced", "Even attention distribution"), ("Diffuse", "Broad, unfocused attention")):
        part = heads[heads["group"] == group]
        if part.empty:
            rows.append([f"**{group}**", "none", "-", "-", "-", meaning])
            continue
        rows.append([f"**{group}**", layer_list(part["head"]), value_range(part["recent"].tolist()), value_range(part["distant"].tolist()),
                     value_range(part["entropy"].tolist()), meaning])
    doc.table(["Head Type", "Heads", "Recent Attn", "Distant Attn", "Entropy", "Specialization"], rows)
    if not heads.empty:
        focused = heads.loc[heads["entropy"].idxmin()]
        diffuse = heads.sort_values("entropy", ascending=False).head(3)
        distant_bias = heads.assign(bias=heads["distant"] - heads["recent"]).sort_values("bias", ascending=False).head(3)
        doc.p("**Key Patterns:**")
        doc.bullets([
            f"**Head {int(focused['head'])}:** most focused (entropy={num(focused['entropy'], 2)}, max_attn={num(focused['max'], 2)}), "
            f"distant={num(focused['distant'], 2)}, recent={num(focused['recent'], 2)}",
            f"**Heads {layer_list(diffuse['head'])}:** most diffuse (entropy {value_range(diffuse['entropy'].tolist())}), recent {value_range(diffuse['recent'].tolist())}",
            f"**Heads {layer_list(distant_bias['head'])}:** strongest distant bias (distant - recent {value_range((distant_bias['distant'] - distant_bias['recent']).tolist())})",
        ])
    kv = pd.DataFrame(single["heads"]["kv_groups"])
    if not kv.empty and model["n_kv_heads"] < model["n_heads"]:
        doc.p("**Heads grouped by shared KV head (GQA):**")
        doc.table(["KV head", "Query heads", "Recent", "Distant", "Entropy (min-max)", "Groups"],
                  [[int(r["kv_head"]), r["heads"], num(r["recent"]), num(r["distant"]),
                    f"{num(r['entropy_min'], 2)}-{num(r['entropy_max'], 2)}", r["groups"]] for r in kv.to_dict("records")])

    _figures(doc, inputs, single)
    _hypotheses(doc, single, multi)
    _baseline_section(doc, single, multi)
    _beyond(doc, single, multi, pruning, metrics)
    _future_directions(doc, single, multi, pruning)
    _conclusion(doc, single, multi)
    _reference_comparison(doc, single, reference, model)
    _data_summary(doc, single, settings, model)
    return doc


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")


def _get(d: dict, *keys):
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _mode_effect_sentence(single: dict) -> str:
    diff = single["isolation_effect"]["difference"]
    if diff is None:
        return ""
    if abs(diff) < MINIMAL_DIFFERENCE:
        return (f"The isolated and visible averages differ by {num(abs(diff) * 100, 1)} points, so in this run isolation has a minimal "
                "effect on attention to earlier parallel tokens.")
    return f"Isolated mode's average is {num(abs(diff) * 100, 1)} points {direction_from_estimate(diff, 0.0)} than visible mode's."


def _baseline_sentence(single: dict, multi: dict | None) -> str:
    base = single["baseline"]["averages"].get("isolated")
    if not base:
        return "and no unique-position control was run."
    word = direction_from_estimate(base["shared"] - base["unique"], 0.0)
    text = (f"and the same tokens replayed at unique positions (RoPE sharing ablated) give {times(base['unique'])} against "
            f"{times(base['shared'])} with shared positions (isolated run): sharing gives parallel tokens {word} attention, not less. "
            if word == MORE else
            f"and the same tokens replayed at unique positions (RoPE sharing ablated) give {times(base['unique'])} against "
            f"{times(base['shared'])} with shared positions (isolated run). ")
    if multi and multi["shared_minus_unique"].get("isolated"):
        d = multi["shared_minus_unique"]["isolated"]
        verdict = interval_word(d, 0.0)
        text += (f"Across prompts the shared - unique difference is {ci_text(d)} (p = {p_text(d.get('p'))}): "
                 + ("no reliable difference, so position sharing does not explain the down-weighting."
                    if verdict not in (LESS, MORE) else
                    f"by the bootstrap interval shared positions give {verdict} attention than unique ones, "
                    + ("so position sharing is not the cause of the down-weighting." if verdict == MORE else "so position sharing contributes to the down-weighting.")))
    return text


def _figures(doc: Document, inputs: ReportInputs, single: dict) -> None:
    iso, vis = _generated(inputs.isolated), _generated(inputs.visible)
    ratio_df = ratio_table([iso, vis])
    doc.h(3, "Figures")
    doc.figure("ratio", figures.ratio_figure(ratio_df), "Parallel : non-parallel ratio per step, by mode (dashed: 1.0 = equal attention)")
    entropy_long = pd.concat([entropy_by_step(iso), entropy_by_step(vis)], ignore_index=True)
    doc.figure("entropy", figures.entropy_figure(entropy_long), "Layer entropy at every step")
    step = single["heads"]["step"]
    n_kv_heads = inputs.isolated.model.get("n_kv_heads")
    heads_by_step = {s: figures.head_scatter(head_specialisation(iso.attention[s], iso.layout, s, iso.mode, n_kv_heads=n_kv_heads),
                                             title=f"Head specialisation at step {s}: recent vs distant attention")
                     for s in sorted(iso.attention)}
    doc.figure("heads", figures.step_slider(heads_by_step, active=step),
               f"Head specialisation (isolated run), recent vs distant, coloured by group; step {step} first, the slider shows every step")
    measured = [r["step"] for r in single["ratios"] if r["mode"] == "isolated"]
    heat_step = measured[0] if measured else max(iso.attention)
    heatmaps = {s: figures.attention_heatmap(iso, s) for s in sorted(iso.attention)}
    doc.figure("heatmap", figures.step_slider(heatmaps, active=heat_step),
               f"Attention of each step's siblings (isolated run), averaged over layers and heads; parallel keys marked; step {heat_step} first")
    doc.figure("branching", figures.branching_figure(iso.layout, iso.token_strings), "TEMPO branching of the isolated run: siblings per step with probabilities")


def _hypotheses(doc: Document, single: dict, multi: dict | None) -> None:
    doc.h(2, "Mechanistic Explanations (hypotheses from the reference report, tested)")
    doc.p("The reference report offered these explanations without controls. Each is stated as a hypothesis, followed by what this run's controls say.")
    base = single["baseline"]["averages"]
    all_ratios = [r["ratio"] for r in single["ratios"]]
    word = direction_from_estimate(_mean(all_ratios)) if all_ratios else "not measured"
    doc.h(3, f"Why Do Parallel Tokens Receive {word.capitalize()} Attention?")
    doc.h(4, "Hypothesis 1: RoPE Position Confusion")
    doc.p("*Hypothesis:* tokens with identical positional encodings are treated as less informative and down-weighted.")
    evidence = [f"Single run, {mode}: shared positions {times(v['shared'])}, unique positions {times(v['unique'])} "
                f"(shared gives {direction_from_estimate(v['shared'] - v['unique'], 0.0)} attention)" for mode, v in base.items()]
    if multi:
        for mode, d in multi["shared_minus_unique"].items():
            evidence.append(f"{multi['n_prompts']} prompts, {mode}: shared - unique = {ci_text(d)}, p = {p_text(d.get('p'))} -> {interval_word(d, 0.0)}")
    doc.p("*What the controls say:*")
    doc.bullets(evidence or ["no unique-position control was run"])
    doc.h(4, "Hypothesis 2: Uncertainty Penalty")
    doc.p("*Hypothesis:* parallel tokens are lower-probability alternatives, and the model down-weights less likely tokens.")
    pref = single["sibling_preference"]
    evidence = [f"Within earlier parallel sets, attention to the less likely siblings / attention to the most likely sibling: {ci_text(pref)} "
                f"(single runs, every step and set) -> the less likely siblings get {direction_from_estimate(pref.get('mean'))} attention"]
    if multi:
        evidence.append(f"{multi['n_prompts']} prompts (one mean per run): {ci_text(multi['sibling_preference'])} -> {interval_word(multi['sibling_preference'], 1.0)}")
    doc.p("*What the controls say:*")
    doc.bullets(evidence)
    doc.h(4, "Hypothesis 3: Information Redundancy")
    doc.p("*Hypothesis:* siblings split attention between them, so each gets less, while a whole set gets about as much as one ordinary token.")
    sets = single["set_ratio_averages"]
    evidence = [f"Single run, {mode}: mass of a whole parallel set / mean weight of one non-parallel token = {times(v)}" for mode, v in sets.items()]
    if multi:
        for mode in ("isolated", "visible"):
            ci = multi["modes"][mode]["set_ratio"]
            evidence.append(f"{multi['n_prompts']} prompts, {mode}: {ci_text(ci)} -> a set gets {interval_word(ci, 1.0)} attention than one token")
    doc.p("*What the controls say:*")
    doc.bullets(evidence)
    doc.h(3, "Why Does Isolation Have Little Effect on Attention to Earlier Parallel Tokens?")
    intra = single["intra_step"]["summary"]
    doc.p("Isolation removes a sibling's view of its own step's other siblings; measured here, the later siblings' attention to them is "
          f"{num(_get(intra, 'visible', 'to_siblings_later'))} in visible mode and {num(_get(intra, 'isolated', 'to_siblings_later'))} in isolated mode. "
          "Cross-step attention to earlier sets is not masked in either mode, which is why the ratio barely moves "
          + (f"(same tokens, mask toggled, {multi['n_prompts']} prompts: isolated - visible = {ci_text(multi.get('isolated_minus_visible_same_tokens'))}, "
             f"p = {p_text(_get(multi, 'isolated_minus_visible_same_tokens', 'p'))})." if multi and multi.get("isolated_minus_visible_same_tokens") else "."))

    doc.h(2, "Implications for TEMPO (hypotheses, with what the controls say)")
    layer_ratio = pd.DataFrame(single["layer_ratio"])
    lowest = layer_ratio.sort_values("ratio").head(3) if not layer_ratio.empty else layer_ratio
    sink = single["no_sink_averages"]
    doc.bullets([
        "*Down-weighting may be beneficial (coherence over exploration).* Not testable from attention alone; the controls show the "
        f"per-token down-weighting {'disappears' if _mean(sink.values()) >= 1 else 'persists'} once the attention sink is left out "
        f"(isolated {times(sink.get('isolated'))}, visible {times(sink.get('visible'))}).",
        "*RoPE sharing has unintended consequences; offset positions slightly (5.0, 5.001, ...).* See Hypothesis 1 and notebook "
        "`03_interventions.ipynb`, which applies fractional positions through the hooks and compares the ratio.",
        "*Isolation works but may be overly conservative.* The mask reaches the attention here: isolated siblings pay exactly "
        f"{num(_get(intra, 'isolated', 'to_siblings'))} to each other, visible ones {num(_get(intra, 'visible', 'to_siblings_later'))} (later siblings).",
        "*Layers and heads as intervention points.* Lowest per-layer ratios in the isolated run (mean over measured steps): "
        + (", ".join(f"layer {int(r['layer'])} ({times(r['ratio'])})" for r in lowest.to_dict("records")) if not lowest.empty else "not measured")
        + ". Notebook `03_interventions.ipynb` adds an attention bias toward parallel keys on chosen layers / heads.",
    ])


def _baseline_section(doc: Document, single: dict, multi: dict | None) -> None:
    doc.h(2, "Comparison to Baseline")
    doc.p("The reference report assumed what standard generation would show. Here the baseline is measured: the same token sequence is "
          "replayed teacher-forced with every token at its own position (RoPE sharing ablated through the same hooks, mask unchanged).")
    rows = sorted(single["baseline"]["rows"], key=lambda r: (r["step"], r["mode"]))
    doc.table(["Step", "Mode", "Shared positions (TEMPO)", "Unique positions (baseline)", "Shared - unique"],
              [[r["step"], r["mode"].upper(), times(r["ratio"]), times(r["ratio_unique"]), num(r["difference"])] for r in rows])
    avg = single["baseline"]["averages"]
    doc.bullets([f"**{mode.capitalize()} average:** shared {times(v['shared'])}, unique {times(v['unique'])}" for mode, v in avg.items()])
    iso = avg.get("isolated")
    if iso:
        below = iso["unique"] < 1
        doc.p(f"**Conclusion:** with unique positions parallel tokens still receive {direction_from_estimate(iso['unique'])} attention "
              f"({times(iso['unique'])}), so the down-weighting {'is not' if below else 'is'} specific to shared positions"
              + ("; it is a property of these tokens and of the attention sink, present in ordinary positional encoding too." if below else "."))


def _beyond(doc: Document, single: dict, multi: dict | None, pruning: dict | None, metrics: dict) -> None:
    doc.h(2, "Beyond the Reference Report")
    doc.h(3, "1. Baseline measured, not assumed")
    doc.p("See *Comparison to Baseline* above (unique-position replay of the same tokens) and, across prompts, section 4.")

    doc.h(3, "2. Confounds: the attention sink and sibling mass")
    doc.p("The first token (BOS / attention sink) sits in the non-parallel bucket and takes a large share of attention. "
          "Sibling tokens with near-equal keys split attention, so the mass of a whole set is shown beside the per-token mean.")
    doc.table(["Step", "Mode", "Ratio (reference definition)", "Ratio without first token", "Set mass / token mean"],
              [[r["step"], r["mode"].upper(), times(r["ratio"]), times(r["ratio_no_sink"]), times(r["set_ratio"])]
               for r in sorted(single["confounds"], key=lambda r: (r["step"], r["mode"]))])
    sink = single["no_sink_averages"]
    doc.p("Averages without the first token: " + ", ".join(f"{m} {times(v)} ({direction_from_estimate(v)} attention than non-parallel tokens)" for m, v in sink.items()) + ".")

    doc.h(3, "3. Intra-step attention (visible vs isolated)")
    doc.p("Each sibling is a query of its step's forward, so attention between siblings is measured directly "
          "(the reference fed one query per step and could not). Means over sibling rows:")
    doc.table(["Mode", "To other siblings", "To other siblings (2nd+ sibling)", "To itself", "To earlier tokens", "Rows"],
              [[mode.upper(), num(v["to_siblings"]), num(v["to_siblings_later"]), num(v["to_self"]), num(v["to_earlier"]), v["n_rows"]]
               for mode, v in single["intra_step"]["summary"].items()])

    doc.h(3, "4. Multi-prompt validation")
    if not multi:
        doc.p("Not run (quick mode).")
    else:
        n_measured = multi["modes"]["isolated"]["n_runs_with_ratio"]
        doc.p(f"{multi['n_prompts']} prompts (shipped in `analyses/prompts.txt`), both modes; {n_measured} of the isolated runs had a step with an "
              "earlier parallel set (the others have no ratio to measure and are left out, not counted as 0). One value per run: the mean of its per-step ratios. "
              "Means with 95 % percentile-bootstrap intervals; paired differences with a two-sided sign-flip permutation p-value. "
              "Direction words come from the interval (\"no reliable difference\" when it contains 1 for ratios or 0 for differences).")
        rows = []
        for mode in ("isolated", "visible"):
            m = multi["modes"][mode]
            for label, key, null in (("Ratio (reference definition)", "ratio", 1.0), ("Ratio without first token", "ratio_no_sink", 1.0),
                                     ("Set mass / token mean", "set_ratio", 1.0), ("Ratio at unique positions", "ratio_unique", 1.0)):
                if key in m:
                    rows.append([mode.upper(), label, ci_text(m[key]), interval_word(m[key], null)])
        doc.table(["Mode", "Measure", "Mean [95 % CI] (n runs)", "Direction vs 1.0"], rows)
        rows = []
        for label, d in (("Isolated - visible (separate generations)", multi.get("isolated_minus_visible")),
                         ("Isolated - visible (same tokens, mask toggled)", multi.get("isolated_minus_visible_same_tokens")),
                         *((f"Shared - unique positions ({m})", d) for m, d in multi["shared_minus_unique"].items())):
            if d:
                rows.append([label, ci_text(d), p_text(d.get("p")), interval_word(d, 0.0)])
        doc.table(["Paired difference", "Mean [95 % CI] (n pairs)", "Permutation p", "Direction vs 0"], rows)
        doc.figure("multi", _multi_figure(multi), "Mean ratio per mode across prompts with 95 % bootstrap intervals")

    doc.h(3, "5. Pruned vs surviving tokens")
    if not pruning:
        doc.p("Not run (quick mode).")
    else:
        strategy = pruning.get("strategy") or {}
        rule = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in strategy.items() if v is not None)
        doc.p(f"A run with retroactive pruning on ({rule}) over the same prompts, isolated mode: "
              f"{pruning['n_parallel_sets']} parallel sets, {pruning['n_collapsed_sets']} collapsed, {pruning['n_pruned_tokens']} tokens pruned. "
              "Relative attention = a token's attention (mean over layers, heads, queries) / the mean over earlier keys except the first, "
              "measured in the forward pass that decided its set (before the pruning took effect); survivors over every later step.")
        doc.table(["Tokens", "Relative attention, mean [95 % CI] (n observations)", "Distinct tokens"],
                  [[outcome, ci_text(v), v["n_tokens"]] for outcome, v in sorted(pruning["summary"].items())])
        pruned, survivor = _get(pruning, "summary", "pruned", "mean"), _get(pruning, "summary", "survivor", "mean")
        if pruned is not None and survivor is not None:
            doc.p(f"Pruned siblings drew {direction_from_estimate(pruned / survivor)} attention than surviving parallel tokens "
                  f"({num(pruned)} vs {num(survivor)} relative to an average token) before they were pruned.")


def _multi_figure(multi: dict):
    rows = [{"mode": mode, "n": v["ratio"]["n"], "mean": v["ratio"]["mean"], "lo": v["ratio"]["lo"], "hi": v["ratio"]["hi"]}
            for mode, v in multi["modes"].items()]
    return figures.ratio_ci_figure(pd.DataFrame(rows))


def _future_directions(doc: Document, single: dict, multi: dict | None, pruning: dict | None) -> None:
    doc.h(2, "Future Research Directions (the reference's list, with what this project now measures)")
    intra = single["intra_step"]["summary"]
    base = single["baseline"]["averages"].get("isolated")
    layer_ratio = pd.DataFrame(single["layer_ratio"])
    doc.bullets([
        "**1. Measure intra-step attention directly** - done: every sibling is a query; later siblings pay "
        f"{num(_get(intra, 'visible', 'to_siblings_later'))} of their attention to earlier siblings in visible mode "
        f"and {num(_get(intra, 'isolated', 'to_siblings_later'))} in isolated mode (Beyond, section 3).",
        "**2. Ablation: remove RoPE sharing** - done: unique-position replay "
        + (f"({times(base['unique'])} vs {times(base['shared'])} shared, isolated run)" if base else "(not run)")
        + "; across prompts in Beyond, section 4.",
        "**3. Boost parallel-token attention** - available as `tempo_lens.hooks.attention_bias_hooks`; "
        "`notebooks/03_interventions.ipynb` measures its effect on the ratio and on the predictions.",
        "**4. Trace token paths through layers** - the ratio per layer is computed (lowest: "
        + (", ".join(f"layer {int(r['layer'])}" for r in layer_ratio.sort_values("ratio").head(3).to_dict("records")) if not layer_ratio.empty else "n/a")
        + "); `tempo_lens.replay(..., run_with_cache=True)` gives every activation of a layout for path tracing.",
        "**5. Compare attention in pruned vs unpruned tokens** - "
        + (f"done (Beyond, section 5: {pruning['n_collapsed_sets']} collapsed sets)." if pruning else "not run (quick mode)."),
    ])


def _conclusion(doc: Document, single: dict, multi: dict | None) -> None:
    doc.h(2, "Conclusion")
    ratios = [r["ratio"] for r in single["ratios"]]
    if not ratios:
        doc.p("No step had an earlier parallel set, so this run cannot speak to parallel-token attention.")
        return
    sink = _mean(single["no_sink_averages"].values())
    base = single["baseline"]["averages"].get("isolated")
    points = [f"With the reference definition, parallel tokens receive {direction_from_estimate(_mean(ratios))} attention than "
              f"non-parallel tokens ({value_range(ratios, 3)}x per step)."]
    points.append(f"Leaving out the first token (attention sink), they receive {direction_from_estimate(sink)} attention "
                  f"({times(sink)} averaged over modes): the sink " + ("accounts for the down-weighting." if sink >= 1 else "does not account for all of it."))
    if base:
        points.append(f"Position sharing {'does not cause' if base['unique'] < 1 and base['shared'] >= base['unique'] - MINIMAL_DIFFERENCE else 'contributes to'} "
                      f"the effect: with unique positions the ratio is {times(base['unique'])} (shared {times(base['shared'])}).")
    diff = single["isolation_effect"]["difference"]
    points.append(f"Isolation changes the ratio by {num(abs(diff) * 100, 1)} points" + (" (minimal)" if abs(diff) < MINIMAL_DIFFERENCE else "")
                  + "; it acts within a step, where it is measured directly.")
    if multi:
        iso = multi["modes"]["isolated"]
        points.append(f"Across {multi['n_prompts']} prompts: {ci_text(iso['ratio'])} ({interval_word(iso['ratio'], 1.0)}), "
                      f"without the sink {ci_text(iso['ratio_no_sink'])} ({interval_word(iso['ratio_no_sink'], 1.0)}).")
    doc.bullets(points)


def _reference_comparison(doc: Document, single: dict, reference: dict, model: dict) -> None:
    doc.h(2, "Comparison with the Reference Report")
    doc.p(f"**{reference['label']}.** Reference values are quoted, not recomputed; this run's values are computed on {model['name']}.")
    ref_avg = reference["mode_averages"]
    ours = single["mode_averages"]
    ref_groups = reference["entropy_groups"]
    layers = pd.DataFrame(single["entropy"]["layers"])
    parallel_iso = single["runs"]["isolated"]["parallel_steps"]
    doc.table(["Quantity", "Reference (cogito 3B)", f"This run ({model['name']})"], [
        ["Model", f"{reference['n_layers']} layers, {reference['n_heads']} heads", f"{model['n_layers']} layers, {model['n_heads']} heads"],
        ["Isolated average ratio", times(ref_avg["isolated"]), times(ours.get("isolated"))],
        ["Visible average ratio", times(ref_avg["visible"]), times(ours.get("visible"))],
        ["Isolated - visible", num(ref_avg["isolated"] - ref_avg["visible"]), num(single["isolation_effect"]["difference"])],
        ["Steps with a ratio (isolated)", ", ".join(str(r["step"]) for r in reference["ratios"] if r["mode"] == "isolated"),
         ", ".join(str(r["step"]) for r in single["ratios"] if r["mode"] == "isolated") or "none"],
        ["Parallel steps (isolated)", str(len(reference["parallel_steps"])), str(len(parallel_iso))],
        ["Queries per step captured", "1 (last sibling only)", "every sibling"],
        ["Most focused layers (step 1)", layer_list(ref_groups["most focused"]["layers"]), layer_list(layers[layers["group"] == "most focused"]["layer"])],
        ["Most diffuse layers (step 1)", layer_list(ref_groups["most diffuse"]["layers"]), layer_list(layers[layers["group"] == "most diffuse"]["layer"])],
    ])
    doc.p("**Why the numbers may differ** (SPEC §5):")
    doc.bullets([f"Reference pipeline: {note}." for note in reference["pipeline_notes"]]
                + [f"The reference's own later validation: {reference['later_validation']}.",
                   "This project implements the intended design (shared RoPE positions through hooks, the isolation mask at the attention scores, all "
                   "siblings fed as queries), checked against Hugging Face eager attention with explicit position_ids and a 4D mask.",
                   "The default model here is much smaller (SmolLM2-135M); run `MODEL=deepcogito/cogito-v1-preview-llama-3B make analyze` for the same model."])


def _data_summary(doc: Document, single: dict, settings: dict, model: dict) -> None:
    doc.h(2, "Data Summary")
    doc.p("**Experiments Analyzed:**")
    doc.bullets(["exp1_isolated: parallel tokens cannot attend to each other (isolation enabled)",
                 "exp1_visible: parallel tokens can attend to each other (isolation disabled)"])
    doc.bullets([
        f"**Prompt:** \"{settings['prompt']}\"",
        f"**Selection Threshold:** {settings['threshold']}",
        f"**Max Tokens:** {settings['max_steps']} (steps; max {settings['max_parallel']} siblings per step, next token from the {settings['next_token_source']} of siblings)",
        f"**Seed:** {settings['seed']}",
        f"**Model:** {model['name']} ({model['n_layers']} layers, {model['n_heads']} heads, {model['n_kv_heads']} KV heads)",
    ])
    for mode in ("isolated", "visible"):
        run = single["runs"][mode]
        doc.p(f"**Generated ({mode}):** `{run['text']}`")
        doc.p(f"**Parallel Steps ({mode}):**")
        doc.bullets([f"Step {s['step']}: {s['size']} parallel tokens (positions {s['physical'][0]}-{s['physical'][1]}; "
                     f"logical position {s['logical_position']}): " + " / ".join(f"`{t}` {p:.2f}" for t, p in zip(s["tokens"], s["probs"]))
                     for s in run["parallel_steps"]] or ["none"])
    shapes = single["runs"]["isolated"]["capture_shapes"]
    first = next(iter(shapes.values())) if shapes else None
    if first:
        doc.p(f"**Attention Captured:** [{first[0]} layers, {first[1]} batch, {first[2]} heads, q queries (the step's siblings), K keys] per step; "
              + ", ".join(f"step {s}: q={v[3]}, K={v[4]}" for s, v in shapes.items()))
