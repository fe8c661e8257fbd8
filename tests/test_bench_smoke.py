"""Smoke test of `make bench`: every section runs on a tiny random-weight model, output structure only.

No timing is asserted (the numbers of a 1-repeat run on a tiny model mean nothing); the real
figures come from `make bench` and live in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.helpers import build_tiny_model, hf_eager

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("tempo_lens_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tempo_lens import load_model

    directory = build_tiny_model("llama", tmp_path_factory.mktemp("bench_tiny") / "llama")
    return load_model(str(directory), device="cpu"), hf_eager(directory)


def _tiny_config(bench):
    return bench.BenchConfig(
        context=8, ks=(1, 2), rounds=1, block=1, linear_rounds=1, scaling_contexts=(8, 16), scaling_rounds=1, scaling_block=1,
        capture_contexts=(8,), capture_k=2, profile_steps=1, analysis_steps=6, analysis_shape=(3, 4, 2),
        analysis_repeats=1,
    )


def test_bench_runs_every_section_on_a_tiny_model(bench, tiny):
    model, hf = tiny
    cfg = _tiny_config(bench)
    results = bench.run_all(model, hf, cfg, log=lambda _msg: None)
    results["machine"] = bench.machine_info()
    sections = results["sections"]
    assert set(sections) == {"parallel", "linear", "prepacked", "scaling", "hf", "profile", "capture", "analysis"}

    parallel = sections["parallel"]
    assert [row["k"] for row in parallel["rows"]] == [1, 2]
    for row in parallel["rows"]:
        for key in ("vs_decode", "hooks_on_off", "width_only"):
            assert set(row[key]) >= {"ratio", "q1", "q3", "of_medians", "fastest", "num_ms", "den_ms"}
            assert row[key]["ratio"] > 0
    assert [row["k"] for row in sections["linear"]["rows"]] == [1, 2]
    assert "rowmajor_vs_rowmajor_1" in sections["linear"]["rows"][1]
    prepacked = sections["prepacked"]
    assert "skipped" in prepacked or prepacked["parity_max_abs_logit_diff"] < 1e-4
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

    report = bench.format_report(results)
    for header in ("[1+2]", "[1b]", "[1c]", "[3]", "[4]", "[4b]", "[5]", "[6]", "Summary"):
        assert header in report
    json.dumps(bench._jsonable(results))


def test_quick_config_is_smaller(bench):
    quick, full = bench.BenchConfig.quick(), bench.BenchConfig()
    assert quick.rounds * quick.block < full.rounds * full.block
    assert full.scaling_contexts == (32, 128, 512, 1024) and full.ks == (1, 2, 4, 8)


def test_gpu_reference_shape_script_runs_tiny(capsys):
    """The GPU tokens-per-second script (run where a GPU is at hand) works end to end on a tiny shape."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_reference_shape.py"
    spec = importlib.util.spec_from_file_location("gpu_reference_shape", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--tiny", "--rounds", "1", "--context", "32"]) == 0
    out = capsys.readouterr().out
    assert "plain cached decode" in out and "TEMPO k=8" in out and "tokens/s" in out
