"""Shared fixtures: tiny random-weight models built in the test, the embedded model, and the HF oracle."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from tests.helpers import TINY_ARCHITECTURES, build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {name: build_tiny_model(name, root / name) for name in TINY_ARCHITECTURES}


@pytest.fixture(scope="session")
def tiny_bridges(tiny_dirs):
    from tempo_lens import load_model

    return {name: load_model(str(path), device="cpu") for name, path in tiny_dirs.items()}


@pytest.fixture(scope="session")
def tiny_hooked(tiny_dirs):
    """The tiny models as HookedTransformers (TransformerLens 3.x only: `make test` runs these in .venv-tl3)."""
    pytest.importorskip("transformer_lens", reason="TransformerLens is needed")
    if not hooked_available():
        pytest.skip("HookedTransformer needs TransformerLens 3.x; make test runs these tests in .venv-tl3")
    from tempo_lens import load_model

    return {name: load_model(str(path), backend="hooked", device="cpu") for name, path in tiny_dirs.items()}


@pytest.fixture(scope="session")
def embedded_hooked():
    if not hooked_available():
        pytest.skip("HookedTransformer needs TransformerLens 3.x; make test runs these tests in .venv-tl3")
    from tempo_lens import load_model

    return load_model(backend="hooked", device="cpu")


def hooked_available() -> bool:
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def tiny_llama(tiny_bridges):
    return tiny_bridges["llama"]


@pytest.fixture(scope="session")
def embedded_model():
    from tempo_lens import load_model

    return load_model(device="cpu")


@pytest.fixture(scope="session")
def embedded_nnsight():
    pytest.importorskip("nnsight", reason="the nnsight backend needs the extra tempo_lens[nnsight]")
    from tempo_lens import load_model

    return load_model(backend="nnsight", device="cpu")


@pytest.fixture(scope="session")
def embedded_hf():
    from transformers import AutoModelForCausalLM

    from tempo_lens.models.loading import embedded_model_dir

    return AutoModelForCausalLM.from_pretrained(embedded_model_dir(), attn_implementation="eager", dtype=torch.float32).eval()


@pytest.fixture
def fake_zoo(tmp_path, monkeypatch):
    """Register fake zoo models (part wheels under a temporary sys.path entry, an empty cache, no transformers).

    Returns ``add(name, payload, **overrides) -> ZooModel``; the fake dequantiser writes a small folder.
    """
    import tempo_lens.models.convert as convert
    from tempo_lens.models import zoo
    from tests.helpers import fake_dequantise, fake_zoo_model

    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("TEMPO_LENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(convert, "dequantise", fake_dequantise)

    def add(name: str, payload: bytes = b"GGUF" + bytes(range(256)) * 40, **overrides):
        entry = fake_zoo_model(site, name, payload, **overrides)
        monkeypatch.setitem(zoo.ZOO, name, entry)
        return entry

    return add


# Tests that start real processes (a fresh interpreter that imports torch, a benchmark, concurrent shards, a
# signal mid-run) or run a whole `analyze`: 10 s or more each. Measured with `pytest --durations`; with the
# embedded-model tests they are the `slow` tier that `make test-fast` leaves out (`make test` runs them all).
SLOW_TESTS = {
    "test_sweep_with_the_real_generate_batch_on_a_tiny_model", "test_memory_child_reports_the_peak_of_one_generation",
    "test_sweep_bookkeeping_with_a_stand_in_for_generate_batch", "test_wait_policy_runs_each_policy_in_fresh_processes",
    "test_bench_runs_every_section_on_a_tiny_model", "test_command_line_runs_a_section_without_a_model",
    "test_embedded_model_from_a_real_process",
    "test_sigterm_during_a_run_ends_it_quietly", "test_a_signal_during_a_write",
    "test_sigint_during_start_up_never_shows_a_traceback", "test_sigkill_during_a_real_run_keeps_the_previous_result",
    "test_sigkill_mid_write_keeps_the_previous_result", "test_a_pickled_component_loads_in_a_fresh_process",
    "test_real_process_bad_threshold_and_usage", "test_real_process_non_utf8_argv_bytes",
    "test_rerun_replaces_its_own_output_and_keeps_other_files", "test_an_edited_report_file_is_not_replaced_without_overwrite",
    "test_an_interrupted_analyze_keeps_finished_runs_and_the_rerun_generates_only_the_rest",
    "test_a_rerun_regenerates_only_what_changed_or_was_damaged",
}
SLOW_MODULES = {"test_cli_shards.py", "test_cross_model.py"}  # every test shares a module fixture of real runs (30-90 s)


def pytest_collection_modifyitems(config, items):
    """Every test that loads the embedded 30-layer model, or is listed in ``SLOW_TESTS`` / ``SLOW_MODULES``, is ``slow``."""
    for item in items:
        if any(f in getattr(item, "fixturenames", ()) for f in ("embedded_model", "embedded_hf", "embedded_hooked", "embedded_nnsight")):
            item.add_marker(pytest.mark.slow)
        elif getattr(item, "originalname", item.name) in SLOW_TESTS or item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


REPORT_COMMON = 'threshold = 1e-6\nmax_parallel = 2\nmax_steps = 5\n'


@pytest.fixture(scope="session")
def report(tiny_dirs, tmp_path_factory):
    """The report built once from a tiny random-weight model (shared by the report and app tests)."""
    import json

    from tempo_lens.cli import main
    from tempo_lens.experiment import load_experiment

    folder = tmp_path_factory.mktemp("analyses")
    exp1 = 'prompt = "t1 t17 t42 t5"\ncontrols = ["unique_positions", "toggled_mask"]\n' + REPORT_COMMON
    (folder / "exp1_isolated.toml").write_text('name = "exp1_isolated"\nmode = "isolated"\n' + exp1)
    (folder / "exp1_visible.toml").write_text('name = "exp1_visible"\nmode = "visible"\n' + exp1)
    (folder / "multi_prompt.toml").write_text(
        'name = "multi_prompt"\nprompts = ["t1 t17 t42 t5", "t1 t9 t33", "t1 t50 t60 t70", "t1 t3 t4"]\n'
        'modes = ["isolated", "visible"]\ncontrols = ["unique_positions", "toggled_mask"]\n' + REPORT_COMMON)
    (folder / "pruning.toml").write_text(
        'name = "pruning"\nprompts = ["t1 t17 t42 t5", "t1 t9 t33"]\nmode = "isolated"\n' + REPORT_COMMON + '[pruning]\nattention_threshold = 1.0\n')
    assert main(["analyze", str(folder), "--model", str(tiny_dirs["llama"])]) == 0
    out = folder / "report"
    return {
        "folder": folder,
        "md": (out / "FINDINGS.md").read_text(),
        "metrics_text": (out / "metrics.json").read_text(),
        "html": (out / "report.html").read_text(),
        "metrics": json.loads((out / "metrics.json").read_text()),
        "iso": load_experiment(folder / "runs" / "exp1_isolated"),
        "vis": load_experiment(folder / "runs" / "exp1_visible"),
        "multi": load_experiment(folder / "runs" / "multi_prompt"),
    }


@pytest.fixture()
def metrics(report):
    """A fresh typed copy of the tiny report's metrics (tests may change it)."""
    from tempo_lens.report import parse_metrics

    return parse_metrics(report["metrics_text"])
