"""The whole report from a tiny random-weight model, each table checked against a naive recomputation from the saved arrays."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tempo_lens.cli import main
from tests.report.conftest import REFERENCE_SECTIONS


def naive_ratio(array, layout, step, exclude_first=False, generated_only=False):
    """The ratio of docs/definitions.md written out with plain loops over the layout's lists."""
    a = array.mean(axis=(0, 1, 2, 3), dtype=np.float64)
    sizes = Counter(s for s in layout.steps if s >= 0)
    start = layout.steps.index(step)
    parallel, other = [], []
    for k in range(start):
        if exclude_first and k == 0:
            continue
        if layout.pruned_at[k] != -1 and layout.pruned_at[k] < step:
            continue
        if layout.steps[k] >= 0 and sizes[layout.steps[k]] >= 2:
            parallel.append(a[k])
        elif layout.steps[k] >= 0 or not generated_only:
            other.append(a[k])
    if not parallel or not other:
        return None
    return (sum(parallel) / len(parallel)) / (sum(other) / len(other))


def naive_matched(array, layout, step, window=1):
    """The distance-matched ratio of docs/definitions.md with plain loops: each parallel key against the non-parallel,
    non-first keys within ``window`` of its logical distance."""
    a = array.mean(axis=(0, 1, 2, 3), dtype=np.float64)
    sizes = Counter(s for s in layout.steps if s >= 0)
    start = layout.steps.index(step)
    query = layout.logical_positions[start]
    seen = [k for k in range(start) if not (layout.pruned_at[k] != -1 and layout.pruned_at[k] < step)]
    is_parallel = {k: layout.steps[k] >= 0 and sizes[layout.steps[k]] >= 2 for k in seen}
    own, base = [], []
    for k in (k for k in seen if is_parallel[k]):
        d = query - layout.logical_positions[k]
        matches = [a[j] for j in seen if j != 0 and not is_parallel[j] and abs(query - layout.logical_positions[j] - d) <= window]
        if matches:
            own.append(a[k])
            base.append(sum(matches) / len(matches))
    if not own:
        return None
    return (sum(own) / len(own)) / (sum(base) / len(base))


def table_after(md: str, heading: str) -> list[list[str]]:
    lines = md[md.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def x(cell: str) -> float:
    return float(cell.rstrip("x"))


def test_sections_and_files(report):
    for section in REFERENCE_SECTIONS:
        assert section in report["md"], section
    assert report["html"].count('class="plot"') >= 5 and "plotly" in report["html"]
    assert report["metrics"]["model"]["n_layers"] == 3
    assert "Reference values (cogito 3B)" in report["md"]


def test_ratio_table_equals_recomputation(report):
    rows = table_after(report["md"], "### 1. Parallel Tokens Receive")
    assert rows
    runs = {"ISOLATED": report["iso"].generated()[0], "VISIBLE": report["vis"].generated()[0]}
    listed = set()
    for step, mode, ratio, words in rows:
        run = runs[mode]
        expected = naive_ratio(run.attention[int(step)], run.layout, int(step))
        assert x(ratio) == pytest.approx(expected, abs=6e-4)
        if abs(expected - 1) < 0.05:  # the tolerance of docs/definitions.md
            assert words.startswith("about equal")
        else:
            assert ("less" in words) == (expected < 1) and ("more" in words) == (expected > 1)
        listed.add((int(step), mode))
    for mode, run in runs.items():
        for step in run.attention:
            if naive_ratio(run.attention[step], run.layout, step) is not None:
                assert (step, mode) in listed
        averages = [naive_ratio(run.attention[s], run.layout, s) for s in sorted(run.attention)]
        averages = [v for v in averages if v is not None]
        assert report["metrics"]["single_run"]["mode_averages"][mode.lower()] == pytest.approx(sum(averages) / len(averages))


def test_confound_and_baseline_tables_equal_recomputation(report):
    iso = report["iso"]
    gen = iso.generated()[0]
    unique = iso.variant("unique_positions")[0]
    for step, mode, ratio, no_sink, generated, matched, _set in table_after(report["md"], "### 2. Confounds"):
        run = gen if mode == "ISOLATED" else report["vis"].generated()[0]
        a, layout, s = run.attention[int(step)], run.layout, int(step)
        assert x(no_sink) == pytest.approx(naive_ratio(a, layout, s, exclude_first=True), abs=6e-4)
        expected = naive_ratio(a, layout, s, generated_only=True)
        assert generated == "n/a" if expected is None else x(generated) == pytest.approx(expected, abs=6e-4)
        expected = naive_matched(a, layout, s)
        assert matched == "n/a" if expected is None else x(matched) == pytest.approx(expected, abs=6e-4)
    for step, mode, shared, uniq, _diff in table_after(report["md"], "## Comparison to Baseline"):
        if mode == "ISOLATED":
            assert x(uniq) == pytest.approx(naive_ratio(unique.attention[int(step)], unique.layout, int(step)), abs=6e-4)


def test_entropy_table_equals_recomputation(report):
    gen = report["iso"].generated()[0]
    step = report["metrics"]["single_run"]["entropy_step"]
    A = gen.attention[step]
    entropy = [float((-(A[l] * np.log(A[l] + 1e-10)).sum(-1)).mean()) for l in range(A.shape[0])]
    order = sorted(range(len(entropy)), key=lambda l: entropy[l])
    rows = {r[0]: r for r in table_after(report["md"], "### 3. Layer-Wise")}
    k = min(3, len(entropy) // 2)
    assert rows["Most Focused"][1].replace(" ", "") in {",".join(map(str, sorted(order[:k]))), f"{min(order[:k])}-{max(order[:k])}"}
    lo, hi = min(entropy[l] for l in order[:k]), max(entropy[l] for l in order[:k])
    assert rows["Most Focused"][2] in {f"{lo:.2f}", f"{lo:.2f}-{hi:.2f}"}


def test_head_table_equals_recomputation(report):
    gen = report["iso"].generated()[0]
    step = report["metrics"]["single_run"]["entropy_step"]
    p = gen.attention[step].mean(axis=0)[0]  # [head, q, k]
    metrics = {r["head"]: r for r in report["metrics"]["single_run"]["heads"]}
    for head in range(p.shape[0]):
        rows = p[head]
        entropy = np.mean([-(r * np.log(r + 1e-10)).sum() for r in rows])
        assert metrics[head]["entropy"] == pytest.approx(entropy, abs=1e-5)
        assert metrics[head]["max"] == pytest.approx(np.mean([r.max() for r in rows]), abs=1e-6)


def test_multi_prompt_means_equal_recomputation(report):
    multi = report["multi"]
    for mode in ("isolated", "visible"):
        per_run = []
        for run in multi.generated():
            if run.mode != mode:
                continue
            values = [naive_ratio(run.attention[s], run.layout, s) for s in sorted(run.attention)]
            values = [v for v in values if v is not None]
            if values:
                per_run.append(sum(values) / len(values))
        summary = next(m for m in report["metrics"]["multi_prompt"]["modes"] if m["mode"] == mode)["ratio"]
        assert summary["mean"] == pytest.approx(sum(per_run) / len(per_run))
        assert summary["lo"] <= summary["mean"] <= summary["hi"]


def test_intra_step_table(report):
    rows = {r[0]: r for r in table_after(report["md"], "### 3. Intra-step attention")}
    assert float(rows["ISOLATED"][1]) == 0.0
    vis = report["vis"].generated()[0]
    later = []
    for step, array in vis.attention.items():
        r = vis.layout.step_range(step)
        a = array.mean(axis=(0, 1, 2))  # [q, k]
        for rank in range(1, len(r)):
            later.append(sum(a[rank, r.start + j] for j in range(len(r)) if j != rank))
    assert float(rows["VISIBLE"][2]) == pytest.approx(np.mean(later), abs=6e-4)


def test_data_summary_lists_parallel_steps(report):
    gen = report["iso"].generated()[0]
    for step in gen.layout.parallel_steps():
        r = gen.layout.step_range(step)
        assert f"Step {step}: {len(r)} parallel tokens (positions {r.start}-{r.stop - 1}" in report["md"]


def test_rerun_replaces_the_report_atomically(report, tiny_dirs):
    folder = report["folder"]
    before = sorted(p.name for p in folder.iterdir())
    assert main(["analyze", str(folder), "--model", str(tiny_dirs["llama"]), "--quick"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == before
    assert "Not run (no multi-prompt experiment, or quick mode)." in (folder / "report" / "FINDINGS.md").read_text()


def test_pruning_metrics_with_partly_pruned_sets(tiny_llama):
    """SimilarityPruning may keep several siblings of a set: only the pruned ones are labelled pruned."""
    from tempo_lens.experiment import config_from_dict, run_experiment
    from tempo_lens.analysis.metrics.multi import pruning_metrics

    config = config_from_dict({"name": "p", "prompts": ["t1 t17 t42 t5"], "threshold": 1e-6, "max_parallel": 3, "max_steps": 4,
                               "pruning": {"strategy": "similarity", "similarity_threshold": -1.0}})
    experiment = run_experiment(config, tiny_llama)
    layout = experiment.generated()[0].layout
    layout.unprune([layout.step_range(0).start + 1])  # keep the second sibling of step 0: a partly pruned set
    metrics = pruning_metrics(experiment)
    step0 = [e for e in metrics.events if e.set_step == 0]
    assert [e.outcome for e in step0] == ["kept (top sibling)", "kept (not pruned)", "pruned"]
    assert all(e.step == 1 for e in step0)
    assert metrics.strategy["strategy"] == "similarity"


def test_summary_leads_with_the_controls_and_the_controls_are_stored(report):
    md = report["md"]
    summary = md[md.index("## Executive Summary"):md.index("## Key Findings")]
    assert summary.index("**What survives the controls**") < summary.index("**The reference's reading**")
    assert "**LESS attention**" not in summary and "**MORE attention**" not in summary
    multi = report["metrics"]["multi_prompt"]
    iso = next(m for m in multi["modes"] if m["mode"] == "isolated")
    assert {"ratio_generated", "ratio_matched"} <= set(iso)
    terms = {c["term"] for r in multi["regression"] for c in r["coefficients"]}
    assert terms == {"intercept", "parallel", "first", "prompt", "log_distance", "sibling"}
    n_layers, n_heads = report["multi"].model["n_layers"], report["multi"].model["n_heads"]
    assert len(multi["head_map"]) == n_layers * n_heads
    assert "### 2b. Confounds: distance and token kind" in md and 'id="fig-head-map"' in report["html"]
    assert len(report["metrics"]["single_run"]["layer_heads"]) == n_layers * n_heads


def test_metrics_of_runs_without_captured_steps(report):
    """`[capture] steps` plus an early EOS: a run (and its toggled-mask replay) with no captured step has no average."""
    import dataclasses

    from tempo_lens.analysis.metrics.inputs import choose_inputs
    from tempo_lens.analysis.metrics.compute import single_run_metrics

    def emptied(experiment, which):
        runs = [dataclasses.replace(r, attention={}) if which(r) else r for r in experiment.runs]
        return dataclasses.replace(experiment, runs=runs)

    iso = emptied(report["iso"], lambda r: r.meta.get("variant") == "toggled_mask")
    assert single_run_metrics(choose_inputs([iso, report["vis"]])).toggled_mask_average is None
    iso = emptied(report["iso"], lambda r: True)
    single = single_run_metrics(choose_inputs([iso, report["vis"]]))
    assert single.toggled_mask_average is None and single.mode_averages.isolated is None
