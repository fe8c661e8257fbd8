"""The cross-model study on two tiny random models: each into its own folder, then the Cross-model section of the main report."""

from __future__ import annotations

import json

import pytest

from tempo_lens.cli import main
from tempo_lens.analysis.metrics.cross_model import folder_name

SETTINGS = 'threshold = 1e-6\nmax_parallel = 2\nmax_steps = 4\ncontrols = ["unique_positions", "toggled_mask"]\n'


@pytest.fixture(scope="module")
def study(tiny_dirs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models_study")
    (folder / "pair.toml").write_text('name = "pair"\nprompt = "t1 t17 t42 t5"\nmodes = ["isolated", "visible"]\n' + SETTINGS)
    (folder / "many.toml").write_text('name = "many"\nprompts = ["t1 t17 t42 t5", "t1 t9 t33", "t1 t50 t60 t70"]\n'
                                      'modes = ["isolated", "visible"]\n' + SETTINGS)
    (folder / "prune.toml").write_text('name = "prune"\nprompt = "t1 t9 t33"\n' + SETTINGS + '[pruning]\nattention_threshold = 1.0\n')
    assert main(["analyze", str(folder), "--model", str(tiny_dirs["llama"])]) == 0
    models = [str(tiny_dirs["llama"]), str(tiny_dirs["llama3_scaling"]), str(folder / "not-installed")]
    assert main(["analyze", str(folder), "--models", ",".join(models)]) == 0
    return folder


def test_each_model_gets_its_own_runs_and_report(study, tiny_dirs):
    for name in ("llama", "llama3_scaling"):
        base = study / "models" / folder_name(str(tiny_dirs[name]))
        assert sorted(p.name for p in (base / "runs").iterdir()) == ["many", "pair"]  # no pruning experiment
        metrics = json.loads((base / "report" / "metrics.json").read_text())
        assert metrics["model"]["n_params"] > 0 and metrics["multi_prompt"]["n_prompts"] == 3
    assert not (study / "models" / "not-installed").exists()


def test_the_main_report_has_the_cross_model_section(study, tiny_dirs):
    md = (study / "report" / "FINDINGS.md").read_text()
    section = md[md.index("## Cross-model"):md.index("## Data Summary")]
    for name in ("llama", "llama3_scaling"):
        assert str(tiny_dirs[name]) in section and f"| {name} |" in section
    for label in ("Ratio, reference script's definition, isolated", "Ratio without the first token, isolated",
                  "Set mass / token mean, isolated", "Ratio at unique positions, isolated",
                  "Isolated - visible, same tokens (paired)", "**Entropy by depth third**", "**Head groups**"):
        assert label in section
    metrics = json.loads((study / "report" / "metrics.json").read_text())
    assert [e["folder"] for e in metrics["cross_model"]] == ["llama", "llama3_scaling"]
    html = (study / "report" / "report.html").read_text()
    assert 'data-figure="models"' in html


def test_direction_words_follow_the_intervals(study):
    from tempo_lens.report import read_metrics
    from tempo_lens.analysis.verdicts import interval_verdict

    metrics = read_metrics(study / "report" / "metrics.json")
    md = (study / "report" / "FINDINGS.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| Ratio, isolated |"))
    cells = [c.strip() for c in row.strip("|").split(" | ")][1:]
    assert len(cells) == len(metrics.cross_model)
    for cell, entry in zip(cells, metrics.cross_model):
        ratio = entry.multi.mode("isolated").ratio
        assert cell.endswith(": " + interval_verdict(ratio).phrase())
        if ratio.n <= 3:  # 2 or 3 runs: the studentized interval is unbounded, so none is given and no direction is claimed
            assert ratio.lo is None and ratio.hi is None and f"(n = {ratio.n}" in cell and "[" not in cell
            assert interval_verdict(ratio).phrase() == "no reliable difference"
        else:
            assert f"[{ratio.lo:.3f}, {ratio.hi:.3f}]" in cell


def test_a_model_that_cannot_load_is_skipped_and_missing_main_runs_are_made_first(tiny_dirs, tmp_path, capsys):
    (tmp_path / "pair.toml").write_text(f'name = "pair"\nmodel = "{tiny_dirs["llama"]}"\nprompt = "t1 t17 t42 t5"\n'
                                        'modes = ["isolated", "visible"]\n' + SETTINGS)
    assert main(["analyze", str(tmp_path), "--models", str(tmp_path / "missing-model")]) == 0
    err = capsys.readouterr().err
    assert "skipping model" in err and "missing-model" in err
    assert "running the main analysis" in err and (tmp_path / "runs" / "pair").is_dir()
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["model"]["name"] == str(tiny_dirs["llama"]) and metrics["cross_model"] == []
    assert main(["analyze", str(tmp_path)]) == 0  # the manifest still knows the main runs: a plain rerun replaces them
