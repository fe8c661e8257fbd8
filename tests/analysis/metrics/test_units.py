"""One value per run before every interval and test: hand-built runs where the answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tempo_lens.analysis.stats import ci_summary, log_ratio_test, paired_permutation_test
from tempo_lens.capture import CapturedRun
from tempo_lens.experiment.storage import Experiment
from tempo_lens.layout import TokenLayout
from tempo_lens.analysis.metrics.measures import interval, paired, sibling_preference
from tempo_lens.analysis.metrics.multi import _preference_by_prompt, pruning_metrics
from tempo_lens.report.text import ci_text
from tempo_lens.analysis.verdicts import interval_verdict


def uniform_run(name: str, layout: TokenLayout, prompt_index: int = 0, mode: str = "isolated") -> CapturedRun:
    """Every captured step attends uniformly over its keys: each relative attention is exactly 1."""
    attention = {}
    for step in range(layout.n_steps):
        r = layout.step_range(step)
        attention[step] = np.full((1, 1, 1, len(r), r.stop), 1.0 / r.stop)
    return CapturedRun(
        name=name, prompt="p", mode=mode, layout=layout, token_strings=[f"t{i}" for i in range(len(layout))],
        layers=[0], attention=attention, meta={"prompt_index": prompt_index},
    )


def experiment(runs: list[CapturedRun]) -> Experiment:
    return Experiment(config={"name": "hand-built"}, runs=runs, model={"n_layers": 1, "n_heads": 1})


def test_one_prompt_with_two_surviving_tokens_is_one_value_not_eighteen():
    """Two siblings at step 0 survive 9 later steps: 18 rows, but one run, so n = 1 and no interval."""
    layout = TokenLayout.from_prompt([10, 11, 12])
    layout.append_step([20, 21], [0.6, 0.3])
    for s in range(9):
        layout.append_step([30 + s], [0.9])
    pruning = pruning_metrics(experiment([uniform_run("p00-isolated", layout)]))
    survivor = pruning.outcome("survivor")
    assert survivor.n_tokens == 2
    assert survivor.attention.n == 1 and survivor.attention.mean == pytest.approx(1.0)
    assert survivor.attention.lo is None and survivor.attention.hi is None and survivor.attention.p is None
    assert ci_text(survivor.attention) == "1.000 (n = 1)"


def test_pruned_minus_kept_top_pairs_one_value_per_run():
    """Run A collapses two sets and run B one: three sets, two runs, so n = 2."""

    def layout(prune_both: bool) -> TokenLayout:
        out = TokenLayout.from_prompt([10, 11, 12])  # 0..2
        out.append_step([20, 21], [0.6, 0.3])  # step 0: 3, 4
        out.append_step([22, 23], [0.6, 0.3])  # step 1: 5, 6
        out.append_step([24], [0.9])  # step 2: 7
        out.append_step([25], [0.9])  # step 3: 8
        out.prune([4, 6] if prune_both else [4], at_step=2, score=0.1)
        return out

    runs = [uniform_run("a", layout(True), 0), uniform_run("b", layout(False), 1)]
    pruning = pruning_metrics(experiment(runs))
    assert pruning.n_collapsed_sets == 3
    assert pruning.pruned_minus_kept_top.n == 2 and pruning.pruned_minus_kept_top.mean == pytest.approx(0.0)
    assert pruning.outcome("pruned").attention.n == 2  # three pruned tokens in two runs


def test_a_prompts_two_modes_are_one_unit_of_sibling_preference():
    layout = TokenLayout.from_prompt([10, 11, 12])
    layout.append_step([20, 21], [0.6, 0.3])
    layout.append_step([22], [0.9])
    runs = [uniform_run(f"p{i:02d}-{m}", layout, i, m) for i in range(3) for m in ("isolated", "visible")]
    assert sibling_preference(runs[0]) == [pytest.approx(1.0)]  # uniform: sibling 2 / sibling 1 = 1
    assert _preference_by_prompt(runs) == [pytest.approx(1.0)] * 3  # three prompts, not six runs


def test_an_interval_counts_runs_without_a_value_as_na():
    one = interval([1.3, float("nan"), None])
    assert (one.n, one.n_na, one.lo, one.hi, one.p) == (1, 2, None, None, None)
    assert ci_text(one) == "1.300 (n = 1; n/a in 2 of 3 runs)"
    none = interval([float("nan")] * 4)
    assert none.mean is None and ci_text(none) == "n/a in 4 of 4 runs"


def test_the_sign_flip_test_acts_on_log_ratios():
    """2 and 1/2 are equally far from 1 on the log scale: no effect (p = 1); as raw ratios they look like one."""
    ratios = [2.0, 0.5, 2.0, 0.5, 2.0, 0.5]
    assert interval(ratios).p == pytest.approx(1.0)
    assert log_ratio_test(ratios)[0] == pytest.approx(1.0)
    raw = np.asarray(ratios) - 1.0
    assert paired_permutation_test(raw, np.zeros_like(raw)) < 1.0  # the old test's answer on the same values
    assert log_ratio_test([0.5, 0.0, 1.2]) == (pytest.approx(np.nan, nan_ok=True),) * 2  # a zero has no log: not tested
    # paired ratios: log(a / b) per pair
    pair = paired([2.0, 1.0, 4.0], [1.0, 2.0, 2.0])
    assert pair.mean == pytest.approx((1.0 - 1.0 + 2.0) / 3) and pair.test_direction == "more"


def test_an_arithmetic_more_with_a_geometric_less_is_not_confirmed():
    """300 ratios of 0.6 and 100 of 3.0: the arithmetic mean is 1.2 (interval above 1), the mean log ratio
    (300 ln 0.6 + 100 ln 3) / 400 = -0.108 below 0: the test points the other way and the word says so."""
    ci = interval([0.6] * 300 + [3.0] * 100)
    assert ci.lo > 1.0 and ci.test_direction == "less" and ci.p < 0.05
    verdict = interval_verdict(ci)
    assert verdict.word == "more" and verdict.confirmed is False
    assert "other side of the null" in verdict.phrase()


def test_ci_summary_resamples_runs_not_steps():
    """Run a has nine steps at 0.5, run b one at 1.5: two runs, mean of the run means (0.5 + 1.5) / 2 = 1."""
    df = pd.DataFrame({"run": ["a"] * 9 + ["b"], "mode": "isolated", "ratio": [0.5] * 9 + [1.5]})
    row = ci_summary(df, n_boot=500).iloc[0]
    assert row["n"] == 2 and row["mean"] == pytest.approx(1.0)


def _eight_prompts() -> Experiment:
    """Eight prompts, isolated and visible, random attention, each with a unique-position replay."""
    rng = np.random.default_rng(3)
    runs = []
    for i in range(8):
        layout = TokenLayout.from_prompt([10, 11, 12, 13])
        layout.append_step([20, 21], [0.6, 0.3])
        for s in range(3):
            layout.append_step([30 + s], [0.9])
        for mode in ("isolated", "visible"):
            attention = {}
            for step in range(layout.n_steps):
                r = layout.step_range(step)
                a = rng.random((1, 1, 2, len(r), r.stop)) + 0.05
                attention[step] = a / a.sum(-1, keepdims=True)
            name = f"p{i:02d}-{mode}"
            run = CapturedRun(name=name, prompt=f"q{i}", mode=mode, layout=layout, token_strings=[f"t{k}" for k in range(len(layout))],
                              layers=[0], attention=attention, meta={"prompt_index": i, "mask": mode})
            replay = CapturedRun(name=f"{name}/unique", prompt=run.prompt, mode=mode, layout=layout, token_strings=run.token_strings,
                                 layers=[0], attention=dict(attention),
                                 meta={"prompt_index": i, "variant": "unique_positions", "source_run": name, "mask": mode,
                                       "positions": "unique"})
            runs += [run, replay]
    return Experiment(config={"name": "hand-built", "prompts": [f"q{i}" for i in range(8)]}, runs=runs,
                      model={"n_layers": 1, "n_heads": 2})


def test_the_knockout_ratios_join_the_summary_family(monkeypatch):
    """With a knock-out beside the runs, its per-mode ratios are two more measures of the family: m = 10; each is the
    geometric mean of the runs' ratios at the corrected level, and its p is Holm-adjusted with the others."""
    import math

    from tempo_lens.analysis.metrics import causal, multi as multi_module
    from tempo_lens.analysis.metrics.multi import multi_prompt_metrics

    ratios = {"isolated": [0.5, 0.6, 0.4, 0.7, 0.55, 0.45, 0.65, 0.5], "visible": [1.1, 0.9, 1.3, 1.0, 0.8, 1.2, 1.05, 0.95]}
    monkeypatch.setattr(multi_module, "knockout_ratios", lambda experiment: ratios)
    multi = multi_prompt_metrics(_eight_prompts())
    family = {n.key: n.interval for n in multi.summary}
    assert {"knockout_isolated", "knockout_visible"} <= set(family) and len(family) == 10
    assert multi.summary_level == pytest.approx(1 - 0.05 / 10)
    iso = family["knockout_isolated"]
    assert iso.mean == pytest.approx(math.exp(np.mean(np.log(ratios["isolated"]))))
    plain = causal.log_ratio_interval(ratios["isolated"])
    assert iso.lo <= plain.lo and iso.hi >= plain.hi and iso.p >= plain.p
    assert iso.p <= 1.0 and iso.lo < 1.0 and iso.hi < 1.0  # every run's ratio is below 1: "less" survives the correction


def test_the_executive_summary_reads_its_measures_corrected_for_their_number():
    """Eight prompts, isolated and visible, with a unique-position replay: the summary's family is the four ratios, the
    ratio at unique positions, shared - unique, and the regression's two coefficients: m = 8, intervals at 1 - 0.05 / 8,
    p-values Holm-adjusted (never below the raw p, and the smallest multiplied by the six tests)."""
    from tempo_lens.report.sections.summary import correction_note, summary_view
    from tempo_lens.analysis.metrics.multi import multi_prompt_metrics

    multi = multi_prompt_metrics(_eight_prompts())
    runs = []
    keys = [n.key for n in multi.summary]
    assert keys == ["ratio", "ratio_no_sink", "ratio_generated", "ratio_matched", "ratio_unique",
                    "shared_minus_unique_isolated", "regression_parallel", "regression_raw"]
    assert multi.summary_level == pytest.approx(1 - 0.05 / 8)
    iso = multi.mode("isolated")
    for key in ("ratio", "ratio_no_sink", "ratio_generated", "ratio_matched"):
        plain, corrected = getattr(iso, key), next(n.interval for n in multi.summary if n.key == key)
        assert corrected.mean == pytest.approx(plain.mean)
        assert corrected.lo <= plain.lo and corrected.hi >= plain.hi  # a higher level: at least as wide
        assert corrected.p >= plain.p
    raw = sorted(getattr(iso, k).p for k in ("ratio", "ratio_no_sink", "ratio_generated", "ratio_matched", "ratio_unique"))
    assert min(n.interval.p for n in multi.summary if n.interval.p is not None) == pytest.approx(
        min(1.0, 6 * min(raw + [multi.pair("shared_minus_unique_isolated").p])))
    view = summary_view(multi)
    assert view.mode("isolated").ratio == next(n.interval for n in multi.summary if n.key == "ratio")
    assert view.mode("visible") == multi.mode("visible")  # only the summary's (isolated) measures change
    assert "8 measures" in correction_note(multi) and "99.4 %" in correction_note(multi)
