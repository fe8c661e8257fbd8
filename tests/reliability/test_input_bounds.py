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


# ---- class 13: analyze saves each config's runs as they finish, and a rerun resumes ---------------------

ANALYZE_SETTINGS = 'threshold = 1e-6\nmax_parallel = 2\nmax_steps = 2\nmodes = ["isolated", "visible"]\n'


def _analyze_folder(folder, model):
    """A single-prompt pair (run at once) and a three-prompt config (streamed in chunks of one prompt)."""
    folder.mkdir(exist_ok=True)
    (folder / "a_pair.toml").write_text(f'name = "a_pair"\nprompt = "t1 t17 t42 t5"\nmodel = "{model}"\n' + ANALYZE_SETTINGS)
    (folder / "multi.toml").write_text(f'name = "multi"\nprompts = ["t1 t17 t42", "t1 t9", "t1 t50 t60"]\n'
                                       f'model = "{model}"\n' + ANALYZE_SETTINGS)
    return folder


@pytest.fixture
def generated(monkeypatch):
    """Every prompt generated (one list per ``generate_batch`` call); set ``stop_after`` to interrupt past that many."""
    import tempo_lens.generation as generation
    from tempo_lens.experiment import stream

    monkeypatch.setattr(stream, "STREAM_ABOVE", 1)
    monkeypatch.setattr(stream, "CHUNK_PROMPTS", 1)
    real = generation.generate_batch

    class Calls(list):
        stop_after: int | None = None

        def prompts(self):
            return [p for call in self for p in call]

    calls = Calls()

    def counted(model, prompts, *args, **kwargs):
        if calls.stop_after is not None and len(calls.prompts()) + len(prompts) > calls.stop_after:
            raise KeyboardInterrupt
        calls.append(list(prompts))
        return real(model, prompts, *args, **kwargs)

    monkeypatch.setattr(generation, "generate_batch", counted)
    return calls


def _metrics(folder):
    """metrics.json less the knock-out's measured cost (wall and CPU seconds of this machine, not results)."""
    import json

    metrics = json.loads((folder / "report" / "metrics.json").read_text())
    knockout = ((metrics.get("multi_prompt") or {}).get("causal") or {}).get("knockout") or {}
    for timing in ("seconds", "cpu_seconds"):
        knockout.pop(timing, None)
    return metrics


def test_an_interrupted_analyze_keeps_finished_runs_and_the_rerun_generates_only_the_rest(
    tiny_dirs, tmp_path, generated
):
    folder = _analyze_folder(tmp_path / "interrupted", tiny_dirs["llama"])
    generated.stop_after = 4  # a_pair (2 runs), then the first chunk of multi (2 runs); its second chunk is interrupted
    rc, _, err = run_cli(["analyze", str(folder)])
    assert rc == 130, err
    runs = folder / "runs"
    assert (runs / "a_pair" / "metadata.json").is_file() and not (runs / "multi").exists()
    (partial,) = [p for p in runs.iterdir() if p.name.startswith(".multi.partial-")]
    assert sorted(p.name for p in partial.iterdir() if not p.name.startswith(".")) == ["chunk-00000"]
    assert not (folder / "report").exists()

    generated.clear()
    generated.stop_after = None
    rc, _, err = run_cli(["analyze", str(folder)])
    assert rc == 0, err
    assert generated == [["t1 t9"], ["t1 t9"], ["t1 t50 t60"], ["t1 t50 t60"]], "finished runs were generated again"
    assert "a_pair: kept the runs" in err and "chunk 1/3 was finished by an earlier run" in err
    assert not partial.exists()

    generated.clear()
    whole = _analyze_folder(tmp_path / "whole", tiny_dirs["llama"])
    assert run_cli(["analyze", str(whole)])[0] == 0
    assert max(len(call) for call in generated) == 1, "a chunk of one prompt is all that is generated at once"
    assert _metrics(folder) == _metrics(whole)


def test_a_rerun_regenerates_only_what_changed_or_was_damaged(tiny_dirs, tmp_path, generated):
    import dataclasses

    from tempo_lens.app.outputs import OutputPlan

    folder = _analyze_folder(tmp_path / "analyses", tiny_dirs["llama"])
    assert run_cli(["analyze", str(folder)])[0] == 0
    first = _metrics(folder)
    generated.clear()
    rc, _, err = run_cli(["analyze", str(folder)])
    assert rc == 0 and generated == [] and "loading model" not in err, "an unchanged rerun generates nothing"
    assert _metrics(folder) == first

    config = dataclasses.replace(load_config(folder / "multi.toml"), model=str(tiny_dirs["llama"]))
    plan = OutputPlan(folder)
    assert plan.finished_run("multi", config, "bridge") == folder / "runs" / "multi"
    for other in (dataclasses.replace(config, model=str(tiny_dirs["qwen2"])), dataclasses.replace(config, dtype="bfloat16"),
                  dataclasses.replace(config, prompts=config.prompts[:2])):
        assert plan.finished_run("multi", other, "bridge") is None
    assert plan.finished_run("multi", config, "hooked") is None

    (folder / "a_pair.toml").write_text((folder / "a_pair.toml").read_text().replace("t1 t17 t42 t5", "t1 t17 t42 t6"))
    arrays = folder / "runs" / "multi" / "attention.npz"
    arrays.write_bytes(arrays.read_bytes()[:-10])  # damaged: its checksum no longer matches
    assert run_cli(["analyze", str(folder)])[0] == 0
    assert sorted(generated.prompts()) == sorted(["t1 t17 t42 t6", "t1 t17 t42", "t1 t9", "t1 t50 t60"] * 2)


def test_analyze_refuses_a_progress_folder_it_did_not_make(tiny_dirs, tmp_path, generated):
    import dataclasses

    from tempo_lens.experiment import stream

    folder = _analyze_folder(tmp_path / "analyses", tiny_dirs["llama"])
    config = dataclasses.replace(load_config(folder / "multi.toml"), model=str(tiny_dirs["llama"]))
    planted = stream.progress_folder(folder / "runs" / "multi", config, None)
    planted.parent.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    planted.symlink_to(tmp_path / "elsewhere")
    rc, _, err = run_cli(["analyze", str(folder)])
    assert_clean_refusal(rc, err, str(planted), "not made by tempo-lens")
    assert generated == [] and not (folder / "runs" / "a_pair").exists(), "refused before anything runs"
    assert planted.is_symlink() and list((tmp_path / "elsewhere").iterdir()) == []
