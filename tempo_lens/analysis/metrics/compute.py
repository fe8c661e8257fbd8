"""Every number of the findings report, computed from experiment files (no model needed).

:func:`compute_metrics` returns a :class:`~.schema.Metrics`; :mod:`.findings` only formats it and
chooses words through :mod:`.verdicts`. The single-run sections follow the reference report (one
prompt, isolated and visible); :mod:`.multi` adds the multi-prompt and pruning sections.
"""

from __future__ import annotations

import json
from importlib import resources

import pandas as pd

from ...capture import CapturedRun
from ...experiment import Experiment
from .. import (
    depth_pattern,
    head_specialisation,
    heads_by_kv_group,
    intra_step_table,
    layer_entropy_table,
    layer_head_specialisation,
    mode_averages,
    ratio_by_layer,
    ratio_table,
)
from ..distance import matched_ratio_table
from ..reference_script import undo_chain_table
from .causal import causal_metrics, saved_knockout
from .figure_data import figure_data
from .inputs import ReportInputs, RunRef
from .measures import MetricsSettings, entropy_step_of, fnum, point_estimate, records, run_depth, sibling_preference
from .multi import multi_prompt_metrics, pruning_metrics
from .schema import (
    SCHEMA_VERSION,
    BaselineRow,
    ByMode,
    CrossModelEntry,
    DepthThird,
    HeadRow,
    IntraStep,
    KVGroup,
    LayerEntropy,
    LayerHeadRow,
    LayerRatio,
    Metrics,
    MissingStep,
    ModelFacts,
    MultiPrompt,
    RunSummary,
    ScriptChainRow,
    Settings,
    SharedUnique,
    SingleRun,
    StepRatio,
    StepSummary,
)


def reference_values() -> dict:
    """The reference report's figures (cogito 3B), shipped with the package and labelled as such."""
    text = resources.files("tempo_lens").joinpath("data/reference_cogito_3b.json").read_text(encoding="utf-8")
    return json.loads(text)


def model_facts(model: dict) -> ModelFacts:
    return ModelFacts(
        name=str(model.get("name")),
        n_layers=int(model["n_layers"]),
        n_heads=int(model["n_heads"]),
        n_kv_heads=int(model.get("n_kv_heads") or model["n_heads"]),
        d_model=model.get("d_model"),
        n_ctx=model.get("n_ctx"),
        n_params=model.get("n_params"),
        dtype=model.get("dtype"),
    )


def run_summary(ref: RunRef) -> RunSummary:
    run, layout = ref.run, ref.run.layout
    steps = []
    for step in range(layout.n_steps):
        r = layout.step_range(step)
        steps.append(
            StepSummary(
                step=step,
                size=len(r),
                first=r.start,
                last=r.stop - 1,
                logical_position=int(layout.logical_positions[r.start]),
                tokens=[run.token_strings[i] for i in r],
                probs=[float(layout.probs[i]) for i in r],
                pruned=[bool(layout.is_pruned(i)) for i in r],
            )
        )
    return RunSummary(
        experiment=ref.name,
        name=run.name,
        mode=run.mode,
        prompt=run.prompt,
        text=run.meta.get("text"),
        n_prompt_tokens=layout.n_prompt,
        n_tokens=len(layout),
        steps=steps,
        capture_shapes={str(s): list(a.shape) for s, a in sorted(run.attention.items())},
    )


def _by_mode(df: pd.DataFrame, column: str = "ratio") -> ByMode:
    values = {row["mode"]: fnum(row[column]) for row in df.to_dict(orient="records")}
    return ByMode(isolated=values.get("isolated"), visible=values.get("visible"))


def _baseline(refs: list[RunRef], table: pd.DataFrame) -> tuple[list[BaselineRow], list[SharedUnique]]:
    """The same tokens at unique positions (RoPE sharing ablated), mask unchanged, step by step."""
    rows, averages = [], []
    for ref in refs:
        unique = ref.variant("unique_positions")
        if unique is None:
            continue
        merged = table[table["run"] == ref.run.name][["step", "ratio"]].merge(
            ratio_table([unique])[["step", "ratio"]].rename(columns={"ratio": "ratio_unique"}), on="step"
        )
        merged = merged[merged["ratio"].notna()]
        rows += records(merged, BaselineRow, mode=ref.run.mode)
        averages.append(
            SharedUnique(
                mode=ref.run.mode,
                shared=fnum(merged["ratio"].mean()) if len(merged) else None,
                unique=fnum(merged["ratio_unique"].mean()) if len(merged) else None,
            )
        )
    return rows, averages


def _average_ratio(run: CapturedRun | None) -> float | None:
    """The mean of a run's per-step ratios; None without the run or without a measured step (no captured step)."""
    averages = mode_averages(ratio_table([run])) if run is not None else None
    return fnum(averages["ratio"].iloc[0]) if averages is not None and len(averages) else None


def _intra(runs: list[CapturedRun]) -> list[IntraStep]:
    table = intra_step_table(runs)
    out = []
    for mode, part in table.groupby("mode"):
        later = part[part["rank"] > 0]
        out.append(
            IntraStep(
                mode=str(mode),
                to_siblings=fnum(part["to_siblings"].mean()),
                to_siblings_later=fnum(later["to_siblings"].mean()) if len(later) else None,
                to_self=fnum(part["to_self"].mean()),
                to_earlier=fnum(part["to_earlier"].mean()),
                n_rows=int(len(part)),
            )
        )
    return out


def _script_chain(runs: list[CapturedRun]) -> list[ScriptChainRow]:
    table = undo_chain_table(runs)
    out = []
    for order, part in table.groupby("order", sort=True):
        values = {row["mode"]: fnum(row["ratio"]) for row in part.to_dict(orient="records")}
        out.append(
            ScriptChainRow(
                order=int(order),
                definition=str(part["definition"].iloc[0]),
                isolated=values.get("isolated"),
                visible=values.get("visible"),
            )
        )
    return out


def _layer_ratio(iso: CapturedRun, measured: pd.DataFrame) -> list[LayerRatio]:
    """Where the down-weighting is strongest: the ratio per layer, averaged over the measured steps."""
    frames = [
        ratio_by_layer(iso.attention[int(step)], iso.layout, int(step), layers=iso.layers)
        for step in measured[measured["mode"] == "isolated"]["step"]
    ]
    if not frames:
        return []
    return records(pd.concat(frames).groupby("layer", as_index=False)["ratio"].mean(), LayerRatio)


def single_run_metrics(inputs: ReportInputs, options: MetricsSettings = MetricsSettings()) -> SingleRun:
    refs = [inputs.isolated, inputs.visible]
    iso, vis = inputs.isolated.run, inputs.visible.run
    runs = [iso, vis]
    table = ratio_table(runs)
    sink = ratio_table(runs, exclude_first=True)
    generated = ratio_table(runs, other="generated")
    matched = matched_ratio_table(runs)
    averages = mode_averages(table)
    measured = table[table["missing_reason"].isna()]
    merged = measured
    for name, frame in (("ratio_no_sink", sink), ("ratio_generated", generated), ("ratio_matched", matched)):
        merged = merged.merge(frame[["run", "step", "ratio"]].rename(columns={"ratio": name}), on=["run", "step"], how="left")
    missing = table[table["missing_reason"].notna()].rename(columns={"missing_reason": "reason"})
    toggled = inputs.isolated.variant("toggled_mask")
    baseline, baseline_averages = _baseline(refs, table)

    model = inputs.isolated.experiment.model
    entropy_step = entropy_step_of(iso, options.entropy_step)
    entropy = heads = layer_heads = None
    if entropy_step is not None:
        entropy = layer_entropy_table(iso.attention[entropy_step], iso.layers, n_layers=model["n_layers"])
        heads = head_specialisation(
            iso.attention[entropy_step], iso.layout, entropy_step, iso.mask, n_kv_heads=model.get("n_kv_heads")
        )
        layer_heads = layer_head_specialisation(
            iso.attention[entropy_step], iso.layout, entropy_step, iso.mask, layers=iso.layers
        )
    preference = sibling_preference(iso) + sibling_preference(vis)
    return SingleRun(
        isolated_experiment=inputs.isolated.name,
        visible_experiment=inputs.visible.name,
        ratios=records(merged, StepRatio),
        missing_steps=records(missing, MissingStep),
        mode_averages=_by_mode(averages),
        set_ratio_averages=_by_mode(averages, "set_ratio"),
        no_sink_averages=_by_mode(mode_averages(sink)),
        toggled_mask_average=_average_ratio(toggled),
        baseline=baseline,
        baseline_averages=baseline_averages,
        intra_step=_intra(runs),
        entropy_step=entropy_step,
        entropy_mode=iso.mask,
        entropy=records(entropy, LayerEntropy) if entropy is not None else [],
        depth=records(depth_pattern(entropy), DepthThird) if entropy is not None else [],
        heads=records(heads, HeadRow) if heads is not None else [],
        kv_groups=records(heads_by_kv_group(heads), KVGroup) if heads is not None else [],
        layer_ratio=_layer_ratio(iso, measured),
        sibling_preference=point_estimate(preference),
        script_chain=_script_chain(runs),
        runs=[run_summary(ref) for ref in refs],
        generated_averages=_by_mode(mode_averages(generated)),
        matched_averages=_by_mode(mode_averages(matched)),
        layer_heads=records(layer_heads, LayerHeadRow) if layer_heads is not None else [],
        depth_all_steps=records(depth, DepthThird) if (depth := run_depth(iso, model["n_layers"])) is not None else [],
    )


def _multi_prompt(experiment: Experiment) -> MultiPrompt:
    """The multi-prompt section with its causal part (the saved knock-out, per-key attention, head measures)."""
    saved = saved_knockout(experiment)  # read once: the summary's family and the causal part both use it
    multi = multi_prompt_metrics(experiment, saved)
    multi.causal = causal_metrics(experiment, saved)
    return multi


def compute_metrics(
    inputs: ReportInputs, cross_model: list[CrossModelEntry] | None = None, options: MetricsSettings = MetricsSettings()
) -> Metrics:
    """Every number of the report from its experiments; ``options`` holds the study's own choices (defaults: the reference's)."""
    experiment = inputs.isolated.experiment
    config = experiment.config
    run = inputs.isolated.run
    settings = Settings(
        prompt=run.prompt,
        threshold=float(config["threshold"]),
        max_steps=int(config["max_steps"]),
        max_parallel=int(config["max_parallel"]),
        next_token_source=str(config["next_token_source"]),
    )
    return Metrics(
        schema_version=SCHEMA_VERSION,
        model=model_facts(experiment.model),
        settings=settings,
        versions={str(k): (None if v is None else str(v)) for k, v in experiment.versions.items()},
        single_run=single_run_metrics(inputs, options),
        multi_prompt=_multi_prompt(inputs.multi) if inputs.multi is not None else None,
        pruning=pruning_metrics(inputs.pruning) if inputs.pruning is not None else None,
        cross_model=list(cross_model or []),
        reference=reference_values(),
        figures=figure_data(inputs, options),
    )
