"""The study runner's plan: the prompt set, its configs, and the up-front estimate (no model is loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tempo_lens.report.inputs import MULTI, config_role
from tempo_lens.report.pipeline import find_configs
from tempo_lens.report.study import (
    REFERENCE_PARAMS, REPORT_SECONDS_PER_RUN, SECONDS_PER_RUN, estimate_seconds, minutes, n_runs,
)

STUDY = Path(__file__).resolve().parents[2] / "analyses" / "study"
GENRES = ("stories", "facts", "dialogue", "lists", "code", "instructions")


def test_the_prompt_set_has_power_and_every_genre():
    configs = find_configs(STUDY)
    study = next(c for c in configs.values() if config_role(c.to_dict()) == MULTI)
    assert len(study.prompts) >= 200 and len(set(study.prompts)) == len(study.prompts)
    assert set(study.modes) == {"isolated", "visible"} and study.batch_size and study.batch_size > 1
    text = (STUDY / "prompts.txt").read_text()
    for genre in GENRES:
        assert f"# --- {genre} ---" in text
    # the single-prompt pair the report needs is there too
    assert {c.modes[0] for c in configs.values() if config_role(c.to_dict()) != MULTI} == {"isolated", "visible"}


def test_estimate_counts_runs_and_scales_with_parameters():
    study = next(c for c in find_configs(STUDY).values() if config_role(c.to_dict()) == MULTI)
    assert n_runs(study) == len(study.prompts) * 2  # no replay controls in the study
    small = estimate_seconds([study], "smollm2-135m")
    assert small == pytest.approx((SECONDS_PER_RUN + REPORT_SECONDS_PER_RUN) * n_runs(study))
    assert estimate_seconds([study], "qwen2.5-1.5b") > 3 * small
    # a model outside the zoo is scaled by its parameters (at least the default's cost)
    assert estimate_seconds([study], "some/local-model") == pytest.approx(small)
    assert REFERENCE_PARAMS > 0
    assert minutes(90) == "1.5 min" and minutes(20) == "20 s"
