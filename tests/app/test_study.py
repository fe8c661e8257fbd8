"""The study runner's plan: the prompt set, its configs, and the up-front estimate (no model is loaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tempo_lens.analysis.knockout_store import read_knockout, sample_prompts
from tempo_lens.app.study_results import demoted, section
from tempo_lens.analysis.metrics.inputs import MULTI, config_role
from tempo_lens.errors import InvalidInputError
from tempo_lens.app.analyze import find_configs
from tempo_lens.experiment import run_experiment
from tempo_lens.experiment.config import config_from_dict
from tempo_lens.app.study import (
    StudyTiming, _run_chunked, estimate_seconds, minutes, n_runs, prompt_chunks, setup_seconds,
)

STUDY = Path(__file__).resolve().parents[2] / "analyses" / "study"
GENRES = ("stories", "facts", "dialogue", "lists", "code", "instructions")


def test_the_prompt_set_has_power_and_every_genre():
    configs = find_configs(STUDY)
    study = next(c for c in configs.values() if config_role(c.to_dict()) == MULTI)
    assert len(study.prompts) >= 200 and len(set(study.prompts)) == len(study.prompts)
    # batched: the batch size is left to the free memory (at most 16), or given and above 1
    assert set(study.modes) == {"isolated", "visible"} and (study.batch_size is None or study.batch_size > 1)
    text = (STUDY / "prompts.txt").read_text()
    for genre in GENRES:
        assert f"# --- {genre} ---" in text
    # the single-prompt pair the report needs is there too
    assert {c.modes[0] for c in configs.values() if config_role(c.to_dict()) != MULTI} == {"isolated", "visible"}


def test_estimate_counts_runs_and_scales_with_parameters():
    study = next(c for c in find_configs(STUDY).values() if config_role(c.to_dict()) == MULTI)
    assert n_runs(study) == len(study.prompts) * 2  # no replay controls in the study
    small = estimate_seconds([study], "smollm2-135m")
    timing = StudyTiming()
    assert small == pytest.approx((timing.seconds_per_run + timing.report_seconds_per_run) * n_runs(study))
    assert estimate_seconds([study], "qwen2.5-1.5b") > 3 * small
    # a model outside the zoo is scaled by its parameters (at least the default's cost)
    assert estimate_seconds([study], "some/local-model") == pytest.approx(small)
    knocked = estimate_seconds([study], "smollm2-135m", knockout_prompts=36)
    assert knocked - small == pytest.approx(timing.knockout_seconds_per_run * 36 * len(study.modes))
    assert timing.reference_params > 0
    # the timing is the study's setting: another machine class passes its own
    slower = StudyTiming(seconds_per_run=2 * timing.seconds_per_run, report_seconds_per_run=2 * timing.report_seconds_per_run)
    assert estimate_seconds([study], "smollm2-135m", slower) == pytest.approx(2 * small)
    assert minutes(90) == "1.5 min" and minutes(20) == "20 s"
    # loading (and a first conversion) comes on top, per model
    assert setup_seconds("qwen2.5-1.5b") > setup_seconds("smollm2-135m") > 0 and setup_seconds("some/local-model") > 0


def test_chunks_are_whole_batches_of_consecutive_prompts():
    chunks = prompt_chunks(216, 16, 8)
    assert [len(c) for c in chunks] == [32] * 6 + [24]
    assert [i for c in chunks for i in c] == list(range(216))
    assert prompt_chunks(5, 16, 8) == [range(0, 5)] and prompt_chunks(5, 1, 8) == [range(i, i + 1) for i in range(5)]


def test_a_chunked_run_equals_one_run_of_the_whole_config(tiny_llama):
    config = config_from_dict(
        {"name": "multi", "prompts": ["t1 t17 t42", "t1 t9 t33 t8", "t1 t50", "t1 t3 t4 t5 t6"], "modes": ["visible", "isolated"],
         "threshold": 1e-6, "max_parallel": 2, "max_steps": 3, "batch_size": 2}
    )
    lines: list[str] = []
    chunked = _run_chunked(config, tiny_llama, 8, lines.append, "tiny")
    whole = run_experiment(config, tiny_llama)
    assert len(lines) == 2 and "chunk 2/2" in lines[-1] and chunked.shard is None
    assert [r.name for r in chunked.runs] == [r.name for r in whole.runs]
    for a, b in zip(chunked.runs, whole.runs):
        assert a.layout == b.layout and sorted(a.attention) == sorted(b.attention)
        for step in a.attention:
            np.testing.assert_allclose(a.attention[step], b.attention[step], atol=1e-6)


def test_the_study_runs_every_model_with_an_estimate_and_progress(tiny_dirs, tmp_path):
    from tempo_lens.app.study import study

    settings = 'threshold = 1e-6\nmax_parallel = 2\nmax_steps = 3\n'
    for mode in ("isolated", "visible"):
        (tmp_path / f"exp1_{mode}.toml").write_text(f'name = "exp1_{mode}"\nprompt = "t1 t17 t42 t5"\nmode = "{mode}"\n' + settings)
    (tmp_path / "study.toml").write_text(
        'name = "study"\nprompts = ["t1 t17 t42 t5", "t1 t9 t33", "t1 t50 t60 t70", "t1 t3 t4"]\n'
        'modes = ["isolated", "visible"]\nbatch_size = 2\n' + settings
    )
    models = [str(tiny_dirs["llama"]), str(tiny_dirs["llama3_scaling"])]
    lines: list[str] = []
    results = tmp_path / "docs" / "study-results.md"
    target = study(tmp_path, models, n_chunks=2, progress=lines.append, knockout_prompts=2, results=results)
    text = "\n".join(lines)
    assert "estimated time on a 2-core CPU" in text and "study chunk 2/2 done (batch 2)" in text
    assert sum("left for the other models" in line for line in lines) == 1  # after the first of the two models
    md = (target / "FINDINGS.md").read_text()
    assert "## Cross-model" in md
    assert sum("study: knock-out took" in line for line in lines) == 2  # each model's multi-prompt runs, while it is loaded
    assert "| Knock-out KL(parallel) / KL(matched), isolated" in md and "**Which reading the knock-out supports**" in md
    assert "It replayed the runs of 2 prompts spread evenly over the prompt set" in md
    page = results.read_text()
    for name in ("llama", "llama3_scaling"):  # each model's executive summary, as its own report has it
        own = section((tmp_path / "models" / name / "report" / "FINDINGS.md").read_text(), "Executive Summary")
        assert f"## {models[0] if name == 'llama' else models[1]}: executive summary" in page and own.splitlines()[0] in page
    assert section(page, "Cross-model") == demoted(section(md, "Cross-model"))
    assert "- Commit: " in page and "- Machine: " in page and "knock-out on the runs of 2 prompts" in page
    for name in ("llama", "llama3_scaling"):
        assert (tmp_path / "models" / name / "report" / "metrics.json").is_file()
        record, reason = read_knockout(tmp_path / "models" / name / "runs" / "study")
        assert reason == "" and {r.prompt_index for r in record.runs} == {0, 2}  # the sample: prompts 0 and 2 of 4
        assert len(record.runs) == 4 and record.settings["prompts"] == [0, 2]


def test_a_knockout_sample_spreads_over_the_prompt_set():
    assert sample_prompts(216, 36) == list(range(0, 216, 6))  # six per genre of 36 consecutive prompts
    assert sample_prompts(10, 3) == [0, 3, 6]
    assert sample_prompts(4, 9) == [0, 1, 2, 3]
    with pytest.raises(InvalidInputError, match="at least one prompt"):
        sample_prompts(4, 0)


def test_a_section_is_read_up_to_the_next_heading_of_its_level():
    text = "# T\n\n## A\n\none\n\n### A.1\n\ntwo\n\n## B\n\nthree\n"
    assert section(text, "A") == "one\n\n### A.1\n\ntwo"
    assert section(text, "B") == "three" and section(text, "C") == ""
    assert demoted("### A.1\ntext") == "#### A.1\ntext"
