"""The Python API refuses wrong arguments with the project's own errors (tempo_lens/errors.py), never a raw
TypeError / AttributeError / IndexError from deep inside, and with the message the CLI would print.

One table: entry point, a wrong argument, the error class and a fragment of its message. The cases
marked "issue" are the red-team examples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tempo_lens import analysis, figures, tools, views
from tempo_lens.capture import CapturedRun, CaptureSpec
from tempo_lens.errors import ConfigError, InvalidInputError, OutOfRangeError, TempoLensError
from tempo_lens.experiment import config_from_dict, load_config, load_experiment, merge_experiments, save_experiment
from tempo_lens.generation import GenerationConfig, generate, generate_batch
from tempo_lens.layout import TokenLayout
from tempo_lens.replaying import replay

PROMPT = [1, 17, 42]


@pytest.fixture(scope="module")
def ctx(tiny_llama):
    """The model, a captured result, its run and layout: what the wrong arguments are given beside."""
    result = generate(tiny_llama, PROMPT, threshold=1e-6, max_parallel=3, max_steps=2, capture=True)
    run = CapturedRun.from_result(result, name="r")
    return {"model": tiny_llama, "result": result, "run": run, "layout": result.layout}


def _hook(x, hook):
    return x


API = {
    # replay
    "replay_layer_outside": (lambda c: replay(c["model"], c["layout"], layers=[99]), InvalidInputError, "replay layers [99] outside 0..2"),  # issue
    "replay_layers_int": (lambda c: replay(c["model"], c["layout"], layers=1), InvalidInputError, "list of layer numbers"),
    "replay_layers_text": (lambda c: replay(c["model"], c["layout"], layers="all"), InvalidInputError, "list of layer numbers"),
    "replay_positions_word": (lambda c: replay(c["model"], c["layout"], positions="weird"), InvalidInputError, "unknown positions"),
    "replay_positions_short": (lambda c: replay(c["model"], c["layout"], positions=[0, 1]), InvalidInputError, "2 entries for"),
    "replay_positions_nan": (lambda c: replay(c["model"], c["layout"], positions=torch.full((len(c["layout"]),), float("nan"))), InvalidInputError, "finite"),
    "replay_positions_object": (lambda c: replay(c["model"], c["layout"], positions=object()), InvalidInputError, "one number per token"),
    "replay_mask_float": (lambda c: replay(c["model"], c["layout"], mask=torch.zeros(2, 2)), InvalidInputError, "boolean"),
    "replay_layout_none": (lambda c: replay(c["model"], None), InvalidInputError, "needs a TokenLayout"),
    "replay_layout_text": (lambda c: replay(c["model"], "t1 t5"), InvalidInputError, "needs a TokenLayout"),
    "replay_layout_empty": (lambda c: replay(c["model"], TokenLayout()), InvalidInputError, "layout is empty"),
    "replay_model_none": (lambda c: replay(None, c["layout"]), InvalidInputError, "TransformerBridge"),
    "replay_hook_unknown": (lambda c: replay(c["model"], c["layout"], extra_hooks=[("blocks.0.nope", _hook)]), InvalidInputError, "no hook point"),
    "replay_hook_not_a_pair": (lambda c: replay(c["model"], c["layout"], extra_hooks=[5]), InvalidInputError, "(hook name, function) pairs"),
    # generate: prompts
    "generate_lone_surrogate": (lambda c: generate(c["model"], "abc\ud800"), InvalidInputError, "not valid text"),  # issue
    "generate_float_ids": (lambda c: generate(c["model"], [1.5, 2.0]), InvalidInputError, "integer token ids"),
    "generate_bool_ids": (lambda c: generate(c["model"], [True, False]), InvalidInputError, "integer token ids"),
    "generate_float_tensor": (lambda c: generate(c["model"], torch.tensor([1.0, 5.0])), InvalidInputError, "integer token ids"),
    "generate_batch_tensor": (lambda c: generate(c["model"], torch.tensor([[1, 2], [3, 4]])), InvalidInputError, "generate_batch"),
    "generate_config_dict": (lambda c: generate(c["model"], PROMPT, config={"threshold": 0.5}), InvalidInputError, "GenerationConfig"),
    "generate_unknown_setting": (lambda c: generate(c["model"], PROMPT, treshold=0.5), InvalidInputError, "did you mean 'threshold'"),
    # generate_batch
    "batch_empty": (lambda c: generate_batch(c["model"], []), InvalidInputError, "non-empty list"),
    "batch_text": (lambda c: generate_batch(c["model"], "t1 t5"), InvalidInputError, "non-empty list"),
    "batch_none": (lambda c: generate_batch(c["model"], None), InvalidInputError, "non-empty list"),
    "batch_none_prompt": (lambda c: generate_batch(c["model"], [PROMPT, None]), InvalidInputError, "text or a flat sequence"),
    "batch_surrogate": (lambda c: generate_batch(c["model"], ["t1", "a\ud800"]), InvalidInputError, "not valid text"),
    "batch_size_zero": (lambda c: generate_batch(c["model"], [PROMPT], batch_size=0), InvalidInputError, "batch_size"),
    "batch_size_fraction": (lambda c: generate_batch(c["model"], [PROMPT], batch_size=1.5), InvalidInputError, "batch_size"),
    "batch_size_bool": (lambda c: generate_batch(c["model"], [PROMPT], batch_size=True), InvalidInputError, "batch_size"),
    # GenerationConfig
    "config_threshold_none": (lambda c: GenerationConfig(threshold=None), InvalidInputError, "threshold"),
    "config_threshold_nan": (lambda c: GenerationConfig(threshold=np.float32("nan")), InvalidInputError, "threshold"),
    "config_max_parallel_absurd": (lambda c: GenerationConfig(max_parallel=10**6), InvalidInputError, "at most"),
    "config_min_above_max": (lambda c: GenerationConfig(min_steps=4, max_steps=3), InvalidInputError, "min_steps (4) is more than max_steps (3)"),
    "config_bezier_point": (lambda c: GenerationConfig(threshold_schedule="bezier:0.5:nan:0.5"), InvalidInputError, "control points"),
    "config_capture_late_step": (lambda c: GenerationConfig(max_steps=3, capture=CaptureSpec(steps=[7])), InvalidInputError, "never reached"),
    "config_capture_word": (lambda c: GenerationConfig(capture="all"), InvalidInputError, "capture must be"),
    "config_from_list": (lambda c: GenerationConfig.from_mapping([1]), InvalidInputError, "table of settings"),
    "config_replace_unknown": (lambda c: GenerationConfig().replace(foo=1), InvalidInputError, "unknown key 'foo'"),
    # captured runs and the analysis entry points
    "run_from_none": (lambda c: CapturedRun.from_result(None), InvalidInputError, "GenerationResult"),
    "run_from_text": (lambda c: CapturedRun.from_result("abc"), InvalidInputError, "GenerationResult"),
    "ratio_table_none": (lambda c: analysis.ratio_table(None), InvalidInputError, "captured run"),
    "ratio_table_text": (lambda c: analysis.ratio_table("abc"), InvalidInputError, "captured run"),
    "ratio_table_numbers": (lambda c: analysis.ratio_table([1, 2]), InvalidInputError, "captured run"),
    "intra_table_none": (lambda c: analysis.intra_step_table(None), InvalidInputError, "captured run"),
    "entropy_by_step_none": (lambda c: analysis.entropy_by_step(None), InvalidInputError, "captured run"),
    "entropy_by_step_uncaptured": (lambda c: analysis.entropy_by_step(c["run"], steps=[99]), InvalidInputError, "not captured"),
    "layer_entropy_text": (lambda c: analysis.layer_entropy("abc"), InvalidInputError, "numbers"),
    "ratio_layout_none": (lambda c: analysis.parallel_ratio(c["run"].attention[0], None, 0), InvalidInputError, "TokenLayout"),
    "ratio_step_outside": (lambda c: analysis.parallel_ratio(c["run"].attention[0], c["layout"], 99), OutOfRangeError, "no step 99"),
    "ratio_step_text": (lambda c: analysis.parallel_ratio(c["run"].attention[0], c["layout"], "0"), InvalidInputError, "step number"),
    "heads_kv_uneven": (lambda c: analysis.head_specialisation(c["run"].attention[0], c["layout"], 0, "isolated", n_kv_heads=3), InvalidInputError, "KV heads"),
    "bootstrap_text": (lambda c: analysis.bootstrap_ci("abc"), InvalidInputError, "numbers"),
    "bootstrap_no_resamples": (lambda c: analysis.bootstrap_ci([1.0, 2.0], n_boot=0), InvalidInputError, "n_boot"),
    "bootstrap_level": (lambda c: analysis.bootstrap_ci([1.0, 2.0], ci=95), InvalidInputError, "(0, 1)"),
    "permutation_lengths": (lambda c: analysis.paired_permutation_test([1, 2], [1]), InvalidInputError, "differ in length"),
    "permutation_none": (lambda c: analysis.paired_permutation_test([1, 2], [1, 3], n_perm=0), InvalidInputError, "n_perm"),
    "heatmap_step_uncaptured": (lambda c: figures.attention_heatmap(c["run"], 99), OutOfRangeError, "step 99 was not captured"),
    "heatmap_layer_uncaptured": (lambda c: figures.attention_heatmap(c["run"], 0, layer=99), InvalidInputError, "layer 99 was not captured"),
    "heatmap_head_outside": (lambda c: figures.attention_heatmap(c["run"], 0, head=99), InvalidInputError, "head 99"),
    "branching_none": (lambda c: figures.branching_figure(None, []), InvalidInputError, "TokenLayout"),
    "step_slider_empty": (lambda c: figures.step_slider({}), InvalidInputError, "at least one figure"),
    "head_grid_step_uncaptured": (lambda c: views.head_grid(c["run"], 99), OutOfRangeError, "step 99 was not captured"),
    "lattice_none": (lambda c: views.token_lattice(None), InvalidInputError, "captured attention"),
    "logit_lens_none": (lambda c: tools.logit_lens(c["model"], None), InvalidInputError, "GenerationResult"),
    "layout_from_none": (lambda c: TokenLayout.from_dict(None), InvalidInputError, "a layout is a table"),
    "layout_missing_key": (lambda c: TokenLayout.from_dict({"token_ids": []}), InvalidInputError, "missing"),
    "layout_step_outside": (lambda c: c["layout"].step_range(99), OutOfRangeError, "no step 99"),
    # files and experiments
    "load_experiment_none": (lambda c: load_experiment(None), InvalidInputError, "must be a path"),
    "load_experiment_number": (lambda c: load_experiment(5), InvalidInputError, "must be a path"),
    "load_experiment_nul": (lambda c: load_experiment("a\0b"), InvalidInputError, "NUL"),
    "load_config_none": (lambda c: load_config(None), ConfigError, "path to a .toml file"),
    "load_config_nul": (lambda c: load_config("a\0b.toml"), ConfigError, "cannot open"),
    "config_from_list": (lambda c: config_from_dict([1]), ConfigError, "table of settings"),
    "merge_nothing": (lambda c: merge_experiments([]), InvalidInputError, "non-empty list"),
    "merge_none": (lambda c: merge_experiments([None]), InvalidInputError, "not an Experiment"),
    "save_none": (lambda c: save_experiment(None, Path("unused")), InvalidInputError, "needs an Experiment"),
    "save_a_run": (lambda c: save_experiment(c["run"], Path("unused")), InvalidInputError, "needs an Experiment"),
}


@pytest.mark.parametrize("case", sorted(API))
def test_api_raises_its_own_error(case, ctx, tmp_path, monkeypatch, no_forward):
    call, error, fragment = API[case]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error) as info:
        call(ctx)
    assert isinstance(info.value, TempoLensError)
    assert fragment.lower() in str(info.value).lower(), str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_replay_of_no_layers_records_nothing(ctx):
    """issue: ``layers=[]`` raised a RuntimeError from torch.stack; it records nothing instead."""
    result = replay(ctx["model"], ctx["layout"], layers=[])
    assert result.attention == {} and result.layers == []
    assert torch.equal(result.logits, replay(ctx["model"], ctx["layout"]).logits)


def test_out_of_range_is_still_an_index_error(ctx):
    """Callers that caught IndexError (or ValueError) from the layout keep working."""
    with pytest.raises(IndexError):
        ctx["layout"].step_range(99)
    with pytest.raises(ValueError):
        TokenLayout.from_dict({"token_ids": []})
