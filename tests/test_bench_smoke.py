"""Smoke test of `make bench`: every section runs on a tiny random-weight model, output structure only.

No timing is asserted (the numbers of a 1-repeat run on a tiny model mean nothing); the real
figures come from `make bench` and live in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import gpu_reference_shape
from benchmarks.config import BenchConfig
from benchmarks.harness import jsonable
from benchmarks.machine import machine_info
from benchmarks.runner import run_all
from benchmarks.summary import format_report
from tests.helpers import build_tiny_model, hf_eager


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tempo_lens import load_model

    directory = build_tiny_model("llama", tmp_path_factory.mktemp("bench_tiny") / "llama")
    return load_model(str(directory), device="cpu"), hf_eager(directory)


def tiny_config(**overrides) -> BenchConfig:
    return BenchConfig(
        context=8, ks=(1, 2), rounds=1, block=1, linear_rounds=1, path_rounds=2, scaling_contexts=(8, 16), scaling_rounds=1, scaling_block=1,
        capture_contexts=(8,), capture_k=2, profile_steps=1, analysis_steps=6, analysis_shape=(3, 4, 2),
        analysis_repeats=1, **overrides,
    )


def test_bench_runs_every_section_on_a_tiny_model(tiny, monkeypatch):
    from tempo_lens import generation

    monkeypatch.delattr(generation, "generate_batch", raising=False)  # the sweep's own tests cover it
    model, hf = tiny
    results = run_all(model, hf, tiny_config(), log=lambda _msg: None)
    results["machine"] = machine_info()
    sections = results["sections"]
    assert set(sections) == {"parallel", "linear", "stock", "scaling", "hf", "profile", "capture", "analysis", "sweep",
                             "changes", "generate"}

    parallel = sections["parallel"]
    assert [row["k"] for row in parallel["rows"]] == [1, 2]
    for row in parallel["rows"]:
        for key in ("vs_decode", "hooks_on_off", "width_only"):
            assert set(row[key]) >= {"ratio", "q1", "q3", "of_medians", "fastest", "num_ms", "den_ms"}
            assert row[key]["ratio"] > 0
    assert [row["k"] for row in sections["linear"]["rows"]] == [1, 2]
    assert "rowmajor_vs_rowmajor_1" in sections["linear"]["rows"][1]
    assert sections["parallel"]["paths"] == sections["stock"]["paths"] and sections["parallel"]["paths"]  # defaults on
    assert sections["stock"]["parity_max_abs_logit_diff"] < 1e-4  # the fast paths change no logit beyond float noise
    assert [row["context"] for row in sections["scaling"]["rows"]] == [8, 16]
    assert sections["hf"]["parity_max_abs_logit_diff"] < 1e-4  # the HF-way and hook-way TEMPO steps agree
    assert sections["profile"]["bridge"]["calls_per_step"] > sections["profile"]["hf"]["calls_per_step"] > 0
    capture = sections["capture"]["rows"][0]
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    assert capture["bytes_per_step"] == 4 * n_layers * n_heads * 2 * (8 + 2)
    analysis = sections["analysis"]
    assert "skipped" in analysis or analysis["seconds"] > 0

    summary = results["summary"]
    assert {"target", "goal", "measured", "met"} <= set(summary[0])
    assert any(row["target"].startswith("1 parallel") for row in summary)
    assert any(row["target"].startswith("6 analysis") for row in summary)

    assert "skipped" in sections["sweep"] and any(row["target"].startswith("7 sweep") for row in summary)
    assert "skipped" in sections["generate"]  # it needs generate_batch, removed above
    paths = {"fast norms", "packed linears (2+ rows)", "one row by column", "one row packed", "defaults (as loaded)"}
    assert {row["path"] for row in sections["changes"]["rows"]} == paths
    for row in sections["changes"]["rows"]:
        assert row["ci95"][0] <= row["ratio"] <= row["ci95"][1] and row["pays"] in ("yes", "no", "unclear")

    report = format_report(results)
    for header in ("[1+2]", "[1b]", "[1c]", "[3]", "[4]", "[4b]", "[5]", "[6]", "[7]", "[8]", "[9]", "Summary"):
        assert header in report
    json.dumps(jsonable(results))


def test_section_8_beside_hf_generate(tiny):
    """Section 8 on the tiny model: every variant at B = 1 and B = 16, the same steps made, ratios and goals reported."""
    from benchmarks.generate import VARIANTS, format_generate, run_models, summary_rows

    model, hf = tiny
    result = run_models(model, [None], "bridge", "cpu", quick=True, rounds=1, log=lambda _msg: None, first_hf=hf)
    (measured,) = result["models"]
    assert {(row["variant"], row["batch"]) for row in measured["rows"]} == {(v, b) for v in VARIANTS for b in (1, 16)}
    for row in measured["rows"]:
        assert row["steps"] == row["prompts"] * measured["steps"] and row["tokens"] >= row["steps"]
    assert all(r["ratio"] > 0 for r in measured["ratios"].values())
    assert {row["goal"] for row in summary_rows(result)} == {">= 1.00x", "<= 1.20x"}
    assert "tempo capture" in "\n".join(format_generate(result))


def test_command_line_runs_a_section_without_a_model(tmp_path, capsys):
    from benchmarks.runner import main

    assert main(["--quick", "--only", "6", "--json", str(tmp_path / "out.json")]) == 0
    out = capsys.readouterr().out
    assert "[6] analysis throughput" in out and "6 analysis" in out and "[1+2]" not in out
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["model"] is None and set(saved["sections"]) == {"analysis"}


def test_quick_config_is_smaller():
    quick, full = BenchConfig.quick(), BenchConfig()
    assert quick.rounds * quick.block < full.rounds * full.block
    assert full.scaling_contexts == (32, 128, 512, 1024) and full.ks == (1, 2, 4, 8)


def test_gpu_reference_shape_script_runs_tiny(capsys):
    """The GPU tokens-per-second script (run where a GPU is at hand) works end to end on a tiny shape."""
    assert gpu_reference_shape.main(["--tiny", "--rounds", "1", "--context", "32"]) == 0
    out = capsys.readouterr().out
    assert "plain cached decode" in out and "TEMPO k=8" in out and "tokens/s" in out


def test_wait_policy_runs_each_policy_in_fresh_processes(tmp_path, capsys, monkeypatch):
    from benchmarks import wait_policy

    monkeypatch.setattr(wait_policy, "POLICIES", {"passive": {"OMP_WAIT_POLICY": "PASSIVE"}})
    directory = build_tiny_model("llama", tmp_path / "llama")
    assert wait_policy.main(["--model", str(directory), "--k", "2", "--context", "8", "--rounds", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.rstrip().endswith("x")]
    assert len(rows) == 1 + 2  # one process alone, then two at once
    assert all(float(row.split()[-1].rstrip("x")) > 0 for row in rows)
