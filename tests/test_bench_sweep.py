"""The throughput sweep (section 7) on a tiny model: skipped without generate_batch, structure with it.

``generate_batch`` is not written yet: one test stands in for it with ``generate`` per prompt (what the
real one must equal) to check the sweep's bookkeeping; the real one is exercised once it exists.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.memory import run_child
from benchmarks.sweep import MISSING, batch_generator, bench_sweep, format_sweep, sweep_prompts
from benchmarks.summary import summarize
from tests.test_bench_smoke import tiny_config


def _sweep_config(**overrides):
    settings = dict(sweep_prompts=4, sweep_steps=2, sweep_batch_sizes=(1, 2, 4), sweep_rounds=1,
                    sweep_models=("not-an-installed-model",), sweep_memory=False)
    return tiny_config(**{**settings, **overrides})


def _check_rows(result: dict, cfg) -> None:
    first, other = result["models"]
    assert other["name"] == "not-an-installed-model" and "not installed" in other["skipped"]
    rows = first["rows"]
    assert [r["variant"] for r in rows] == ["one_at_a_time", "batch_1", "batch_2", "batch_4"]
    for row in rows:  # every variant does the same work: each prompt exactly sweep_steps steps
        assert row["steps"] == cfg.sweep_prompts * cfg.sweep_steps
        assert row["tokens"] >= row["steps"] and row["tokens_per_s"] > 0
        assert row["rows_differing_from_generate"] == 0
    assert rows[0]["speedup"] is None and rows[-1]["speedup"]["ratio"] > 0
    assert first["batch1_over_generate"]["ratio"] > 0


def test_sweep_is_skipped_until_generate_batch_exists(tiny_llama, monkeypatch):
    from tempo_lens import generation

    monkeypatch.delattr(generation, "generate_batch", raising=False)
    result = bench_sweep(tiny_llama, _sweep_config(), log=lambda _msg: None)
    assert result == {"skipped": MISSING}
    assert "skipped" in "\n".join(format_sweep(result))
    assert summarize({"sections": {"sweep": result}})[0]["measured"] == "skipped"


def test_sweep_bookkeeping_with_a_stand_in_for_generate_batch(tiny_llama, monkeypatch):
    from tempo_lens import generation

    calls = []

    def stand_in(model, prompts, **settings):
        calls.append(len(prompts))
        return [generation.generate(model, prompt, **settings) for prompt in prompts]

    monkeypatch.setattr(generation, "generate_batch", stand_in, raising=False)
    cfg = _sweep_config()
    result = bench_sweep(tiny_llama, cfg, log=lambda _msg: None)
    _check_rows(result, cfg)
    assert sorted(set(calls)) == [1, 2, 4]  # chunks of each batch size
    report = "\n".join(format_sweep(result))
    assert "batch_4" in report and "generate_batch B=1 / generate" in report
    targets = [row["target"] for row in summarize({"sections": {"sweep": result}})]
    assert any("B=4 throughput" in t for t in targets) and any("B=1 / generate" in t for t in targets)


def test_memory_child_reports_the_peak_of_one_generation(tiny_dirs):
    settings = {"threshold": 0.1, "max_steps": 3, "min_steps": 3, "mode": "isolated"}
    spec = {"model": str(tiny_dirs["llama"]), "device": "cpu", "batch": 0, "prompts": sweep_prompts(1), "settings": settings}
    memory = run_child(["--sweep-child", json.dumps(spec)])
    assert "error" not in memory, memory
    assert memory["peak_rss_mb"] >= memory["rss_before_mb"] > 0 and memory["tokens"] >= 3
    assert memory["peak_rise_mb"] == pytest.approx(memory["peak_rss_mb"] - memory["rss_before_mb"])


@pytest.mark.skipif(batch_generator() is None, reason=MISSING)
def test_sweep_with_the_real_generate_batch_on_a_tiny_model(tiny_llama, tiny_dirs):
    cfg = _sweep_config(sweep_memory=True)
    result = bench_sweep(tiny_llama, cfg, model_path=str(tiny_dirs["llama"]), log=lambda _msg: None)
    _check_rows(result, cfg)
    for row in result["models"][0]["rows"]:
        assert row["memory"]["peak_rss_mb"] > 0, row["memory"]
