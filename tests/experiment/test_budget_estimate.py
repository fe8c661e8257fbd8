"""The up-front statement of an experiment's cost: runs, attention memory and a time bound, before generation."""

from __future__ import annotations

from tempo_lens.experiment import config_from_dict, run_experiment
from tempo_lens.experiment.budget import estimate_seconds


def test_time_bound_is_stated_before_generation(tiny_llama):
    config = config_from_dict({"prompts": ["t1 t17 t42", "t5 t6", "t7"], "threshold": 1e-6, "max_parallel": 2,
                               "max_steps": 3, "modes": ["isolated", "visible"], "controls": ["toggled_mask"]})
    seconds, probe = estimate_seconds(tiny_llama, config, 3)
    assert probe > 0 and seconds == probe * (3 * 2 * (3 + 1) + 3 * 2 * 1)
    lines = []
    run_experiment(config, tiny_llama, progress=lines.append)
    assert "at most about" in lines[0] and "runs" in lines[0]  # the estimate comes first, before any run
    assert len([line for line in lines if "at most about" in line]) == 1


def test_analyze_takes_allow_large(tmp_path):
    from tempo_lens.cli import build_parser

    args = build_parser().parse_args(["analyze", str(tmp_path), "--allow-large"])
    assert args.allow_large is True
