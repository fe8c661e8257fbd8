"""The report built once from a tiny random-weight model (shared by the report tests)."""

from __future__ import annotations

import json

import pytest

from tempo_lens.cli import main
from tempo_lens.experiment import load_experiment

REFERENCE_SECTIONS = [
    "## Executive Summary", "## Key Findings", "### 1. Parallel Tokens Receive", "### 2. Isolation Mode Has",
    "### 3. Layer-Wise Attention Patterns", "### 4. Attention Head Specialization", "## Mechanistic Explanations",
    "## Implications for TEMPO", "## Comparison to Baseline", "## Data Summary",
    "## Beyond the Reference Report", "### 4. Multi-prompt validation", "### 5. Pruned vs surviving tokens",
    "## Comparison with the Reference Report", "### Why Do Parallel Tokens Receive", "## Future Research Directions",
    "## Conclusion",
]
COMMON = 'threshold = 1e-6\nmax_parallel = 2\nmax_steps = 5\n'


@pytest.fixture(scope="session")
def report(tiny_dirs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("analyses")
    exp1 = 'prompt = "t1 t17 t42 t5"\ncontrols = ["unique_positions", "toggled_mask"]\n' + COMMON
    (folder / "exp1_isolated.toml").write_text('name = "exp1_isolated"\nmode = "isolated"\n' + exp1)
    (folder / "exp1_visible.toml").write_text('name = "exp1_visible"\nmode = "visible"\n' + exp1)
    (folder / "multi_prompt.toml").write_text(
        'name = "multi_prompt"\nprompts = ["t1 t17 t42 t5", "t1 t9 t33", "t1 t50 t60 t70", "t1 t3 t4"]\n'
        'modes = ["isolated", "visible"]\ncontrols = ["unique_positions", "toggled_mask"]\n' + COMMON)
    (folder / "pruning.toml").write_text(
        'name = "pruning"\nprompts = ["t1 t17 t42 t5", "t1 t9 t33"]\nmode = "isolated"\n' + COMMON + '[pruning]\nattention_threshold = 1.0\n')
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
