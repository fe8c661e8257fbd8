"""Inputs (issue 21, classes 13-15): an experiment past the stated bounds must be asked for; prompts files
split on ``\\n`` only; thresholds compared at the precision the probabilities are recorded in.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tempo_lens.errors import ConfigError
from tempo_lens.experiment import config_from_dict, load_config, run_experiment
from tempo_lens.experiment.budget import MAX_RUNS, attention_bytes, check_memory
from tempo_lens.generation.steps import select_siblings
from tests.reliability.conftest import assert_clean_refusal, run_cli

# ---- class 13: big experiments are refused before any work unless asked --------------------------------

@pytest.fixture
def big_prompts_file(tmp_path):
    (tmp_path / "prompts.txt").write_text("".join(f"t1 t{i % 90 + 2}\n" for i in range(100_000)))
    config = tmp_path / "big.toml"
    config.write_text('prompts_file = "prompts.txt"\nmax_steps = 2\n')
    return config


def test_a_100k_line_prompts_file_is_refused_before_the_model_loads(big_prompts_file, tmp_path, no_model_load):
    rc, _, err = run_cli(["run", str(big_prompts_file), "--out", str(tmp_path / "out")])
    assert_clean_refusal(rc, err, "100,000 runs", f"{MAX_RUNS:,}", "--shard", "--allow-large")
    assert not (tmp_path / "out").exists()


def test_analyze_refuses_it_too_before_the_model_loads(big_prompts_file, tmp_path, no_model_load):
    (tmp_path / "pair.toml").write_text('prompt = "t1 t2"\nmodes = ["isolated", "visible"]\n')
    rc, _, err = run_cli(["analyze", str(tmp_path)])
    assert_clean_refusal(rc, err, "100,000 runs", "allow_large")


def test_controls_and_modes_count_as_runs(tmp_path):
    prompts = [f"t1 t{i % 90 + 2}" for i in range(MAX_RUNS // 4 + 1)]
    config = config_from_dict({"prompts": prompts, "modes": ["isolated", "visible"], "controls": ["toggled_mask"]})
    with pytest.raises(ConfigError, match="runs"):
        run_experiment(config, model=object())  # refused before the model is touched
    allowed = config_from_dict({"prompts": prompts[:10], "allow_large": True})
    assert allowed.allow_large


def test_attention_past_half_the_free_memory_is_refused_unless_asked():
    config = config_from_dict({"prompt": "t1 t2", "max_steps": 50, "max_parallel": 64})
    need = attention_bytes(config, n_layers=30, n_heads=9, longest_prompt=20, n_prompts=1)
    assert need > 2**30
    with pytest.raises(ConfigError, match="GiB"):
        check_memory(need, free=need, config=config)
    check_memory(need, free=need, config=config, allow_large=True)


def test_progress_reports_time_left_while_generating(tiny_llama):
    config = config_from_dict({"prompts": ["t1 t17 t42", "t1 t9"], "threshold": 1e-6, "max_parallel": 2, "max_steps": 2})
    lines = []
    run_experiment(config, tiny_llama, progress=lines.append)
    assert any("runs; captured attention up to" in line for line in lines)
    assert any("generated 2/2 prompt(s)" in line and "min of generation left" in line for line in lines)


# ---- class 14: prompts files split on \n only ---------------------------------------------------------

def test_unicode_line_breaks_stay_inside_their_prompt(tmp_path):
    lines = ["first\u2028still first", "second\u0085still second", "third\x0cstill third", "fourth\x0b\x1c\x1d\x1e end"]
    (tmp_path / "p.txt").write_text("\n".join(lines) + "\r\n# a comment\n\n")
    (tmp_path / "c.toml").write_text('prompts_file = "p.txt"\n')
    assert load_config(tmp_path / "c.toml").prompts == lines


# ---- class 15: thresholds at the recorded precision ----------------------------------------------------

def test_a_threshold_a_hair_above_the_recorded_probability_drops_the_sibling():
    probs = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float32)
    recorded = float(probs[1])  # what the layout records: the float32 value, exactly, as a Python float
    above = recorded * (1 + 3e-8)
    assert np.float32(above) == np.float32(recorded)  # in float32 they are equal: the old comparison kept it
    ids, kept, cleared = select_siblings(probs, above, max_parallel=8)
    assert ids == [0] and cleared == 1
    ids, kept, cleared = select_siblings(probs, recorded, max_parallel=8)
    assert ids == [0, 1] and kept[1] == recorded


def test_a_long_run_is_streamed_to_disk_and_an_interrupted_one_resumes(tiny_dirs, tiny_llama, tmp_path, monkeypatch):
    """Each finished chunk is on disk at once; a rerun skips the finished chunks; the result equals an unstreamed run."""
    import numpy as np

    from tempo_lens.experiment import load_experiment, stream

    monkeypatch.setattr(stream, "STREAM_ABOVE", 1)
    monkeypatch.setattr(stream, "CHUNK_PROMPTS", 1)
    config_path = tmp_path / "long.toml"
    config_path.write_text(f'prompts = ["t1 t17 t42", "t1 t9", "t1 t50 t60"]\nmodel = "{tiny_dirs["llama"]}"\n'
                           'threshold = 1e-6\nmax_parallel = 2\nmax_steps = 2\nmodes = ["isolated", "visible"]\n')
    out = tmp_path / "out"
    calls, interrupt = [], [True]
    real = stream.run_experiment

    def interrupted_at_the_second_chunk(*args, **kwargs):
        calls.append(kwargs["prompt_indices"])
        if interrupt[0] and len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(stream, "run_experiment", interrupted_at_the_second_chunk)
    rc, _, err = run_cli(["run", str(config_path), "--out", str(out)])
    assert rc == 130 and not out.exists()
    (partial,) = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert sorted(p.name for p in partial.iterdir() if not p.name.startswith(".")) == ["chunk-00000"]
    calls.clear()
    interrupt[0] = False
    rc, _, err = run_cli(["run", str(config_path), "--out", str(out)])
    assert rc == 0, err
    assert calls == [[1], [2]], "the finished chunk was run again"
    assert "finished by an earlier run" in err and not partial.exists()
    streamed = load_experiment(out)
    whole = run_experiment(load_config(config_path), tiny_llama)
    assert [r.name for r in streamed.runs] == [r.name for r in whole.runs]
    for a, b in zip(streamed.runs, whole.runs):  # the same tokens; floats as equal as batching allows
        mine, theirs = a.layout.to_dict(), b.layout.to_dict()
        assert {k: v for k, v in mine.items() if k not in ("probs", "prune_scores")} == \
            {k: v for k, v in theirs.items() if k not in ("probs", "prune_scores")}
        np.testing.assert_allclose(np.array(mine["probs"], dtype=float), np.array(theirs["probs"], dtype=float), rtol=1e-4)
        for step in b.attention:
            np.testing.assert_allclose(a.attention[step], b.attention[step], atol=1e-4)
