"""The public surface: top-level names, one result type for analysis, capture by layer number, results on disk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import tempo_lens
from tempo_lens.errors import ExperimentFileError, InvalidInputError

PROMPT = [1, 17, 42, 5, 63, 8]
TOP3 = dict(threshold=1e-6, max_parallel=3)

PUBLIC = ["load_model", "generate", "generate_batch", "replay", "load_experiment", "load_result", "TokenLayout",
          "tempo_hooks", "tempo_position_hooks", "isolation_mask_hooks", "pruned_keys_mask_hooks", "attention_bias_hooks",
          "CapturedRun", "AttentionPruning", "SimilarityPruning", "GenerationConfig", "PatternRecorder"]


def test_top_level_names():
    for name in PUBLIC:
        assert name in tempo_lens.__all__ and getattr(tempo_lens, name) is not None
    with pytest.raises(AttributeError):
        tempo_lens.no_such_name  # noqa: B018


def test_research_modules_are_public():
    """``tempo_lens.tools`` (and analysis, figures, views) are in ``__all__`` and reachable as attributes."""
    import importlib

    for name in ("analysis", "figures", "tools", "views"):
        assert name in tempo_lens.__all__ and getattr(tempo_lens, name) is importlib.import_module(f"tempo_lens.{name}")
    assert callable(tempo_lens.tools.activation_patching)


@pytest.fixture(scope="module")
def captured(tiny_llama):
    return tempo_lens.generate(tiny_llama, PROMPT, max_steps=4, capture=True, **TOP3)


def test_analysis_and_figures_take_a_generated_result(captured):
    from tempo_lens.analysis import intra_step_table, layer_entropy_table, ratio_table
    from tempo_lens.figures import attention_heatmap

    table = ratio_table([captured])
    assert len(table) == 4 and table["ratio"].notna().sum() >= 1
    assert ratio_table(captured).equals(ratio_table([captured]))
    assert not intra_step_table(captured).empty
    assert attention_heatmap(captured, 3).data[0].z.shape == (3, len(captured.layout))
    entropy = layer_entropy_table([captured, captured])
    assert list(entropy.columns[:3]) == ["run", "mode", "step"] and len(entropy) == 2 * 4 * 3


def test_analysis_takes_saved_runs_alike(captured, tiny_llama, tmp_path):
    from tempo_lens.analysis import layer_entropy_table, ratio_table
    from tempo_lens.experiment import config_from_dict, run_experiment, save_experiment

    config = config_from_dict({"prompts": ["t1 t17 t42", "t5 t6"], "threshold": 1e-6, "max_parallel": 2, "max_steps": 3,
                               "modes": ["isolated", "visible"], "controls": ["toggled_mask"]})
    exp = tempo_lens.load_experiment(save_experiment(run_experiment(config, tiny_llama), tmp_path / "exp"))
    assert not layer_entropy_table(exp.runs).empty and not layer_entropy_table(exp).empty
    assert not ratio_table(exp).empty
    toggled = exp.variant("toggled_mask")  # a control replay keeps its generation's mode; the mask is in meta
    assert {r.mode for r in toggled} == {"isolated", "visible"}
    assert all(r.meta["mask"] != r.mode for r in toggled)


def test_capture_knows_its_layer_numbers(tiny_llama):
    from tempo_lens.analysis import ratio_by_layer

    result = tempo_lens.generate(tiny_llama, PROMPT, max_steps=3, capture=[2], **TOP3)
    assert list(result.capture) == [0, 1, 2] and len(result.capture) == 3
    step = result.capture[1]
    assert step.layers == [2] and step[2].shape == (1, 4, 3, result.layout.step_range(1).stop)
    with pytest.raises(KeyError, match="captured layers"):
        step[0]
    assert list(ratio_by_layer(step, result.layout, 1)["layer"]) == [2]
    last = tempo_lens.generate(tiny_llama, PROMPT, max_steps=2, capture=[-1], **TOP3)
    assert last.capture.layers == [2] and last.capture[0][-1 % 3].shape[:2] == (1, 4)


def test_replay_layer_selection(tiny_llama, captured):
    assert tempo_lens.replay(tiny_llama, captured.layout, layers=[]).attention == {}
    assert tempo_lens.replay(tiny_llama, captured.layout, layers=[-1]).layers == [2]
    with pytest.raises(InvalidInputError, match="replay layers"):
        tempo_lens.replay(tiny_llama, captured.layout, layers=[99])


def test_config_accepts_negative_capture_layers():
    from tempo_lens.experiment import config_from_dict

    config = config_from_dict({"prompt": "t1", "capture": {"layers": [-1]}})
    assert config.generation.capture.layers_for(3) == [2]


def test_result_save_load_and_table(captured, tmp_path):
    path = captured.save(tmp_path / "r")
    loaded = tempo_lens.load_result(path)
    assert loaded.layout.to_dict() == captured.layout.to_dict() and loaded.text == captured.text
    assert loaded.config == captured.config
    for step in captured.capture:
        np.testing.assert_array_equal(loaded.capture[step].array, captured.capture[step].array)
    with pytest.raises(ExperimentFileError, match="already exists"):
        captured.save(path)
    table = captured.to_dataframe()
    assert isinstance(table, pd.DataFrame) and len(table) == len(captured.layout)
    assert list(table[table.step == 1]["rank"]) == [0, 1, 2]
    (path / "attention.npz").write_bytes(b"damaged")
    with pytest.raises(ExperimentFileError, match="checksum"):
        tempo_lens.load_result(path)


def test_position_memo_follows_new_tensors_and_in_place_edits(tiny_llama):
    """A callable returning fresh tensors (ids may be reused) or a tensor edited in place is never stale."""
    from tempo_lens.hooks import rope_position_hooks

    tokens = torch.tensor([[1, 10, 11, 12]])
    expected = {}
    for shift in (0.0, 5.0):
        with torch.no_grad():
            expected[shift] = tiny_llama.run_with_hooks(tokens, fwd_hooks=rope_position_hooks(tiny_llama, torch.arange(4.0) + shift))
    state = {"shift": 0.0}
    hooks = rope_position_hooks(tiny_llama, lambda: torch.arange(4.0) + state["shift"])
    edited = torch.arange(4.0)
    in_place = rope_position_hooks(tiny_llama, edited)
    with torch.no_grad():
        for shift in (0.0, 5.0, 0.0, 5.0):
            state["shift"] = shift
            assert torch.equal(tiny_llama.run_with_hooks(tokens, fwd_hooks=hooks), expected[shift])
            edited.copy_(torch.arange(4.0) + shift)
            assert torch.equal(tiny_llama.run_with_hooks(tokens, fwd_hooks=in_place), expected[shift])


def test_pattern_recorder_is_a_context_manager(tiny_llama):
    with tempo_lens.PatternRecorder([0]) as recorder, torch.no_grad():
        tiny_llama.run_with_hooks(torch.tensor([[1, 2, 3]]), fwd_hooks=recorder.hooks())
        assert set(recorder.patterns) == {0}
    assert recorder.patterns == {}


def test_generation_config_is_the_one_source():
    from tempo_lens.cli import build_parser

    config = tempo_lens.GenerationConfig()
    with pytest.raises(InvalidInputError, match="did you mean 'max_steps'"):
        config.replace(max_step=3)
    help_text = build_parser()._subparsers._group_actions[0].choices["generate"].format_help()
    for name in ("--threshold", "--max-steps", "--mode", "--max-parallel", "--min-steps", "--next-token-source",
                 "--threshold-schedule", "--chat"):
        assert name in help_text
    assert "--seed" not in help_text
