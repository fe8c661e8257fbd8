"""`analyze` computes the knock-out while the model is loaded, saves it beside the multi-prompt runs, and the report reads it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tempo_lens.analysis.knockout import knockout_run
from tempo_lens.analysis.knockout_store import experiment_digest, read_knockout
from tempo_lens.analysis.metrics.causal_schema import read_causal
from tempo_lens.cli import main
from tempo_lens.experiment import load_experiment
from tempo_lens.report import parse_metrics

COMMON = 'threshold = 1e-6\nmax_parallel = 2\nmax_steps = 4\n'


def test_analyze_saves_the_knockout_of_the_multi_prompt_runs(report, tiny_bridges):
    folder = report["folder"] / "runs" / "multi_prompt"
    record, reason = read_knockout(folder, experiment_digest(folder))
    assert record is not None and reason == ""
    assert set(record.layers) == {"all", "early", "middle", "late"}
    multi = load_experiment(folder)
    assert {(r.run, r.mode) for r in record.runs} == {(r.name, r.mode) for r in multi.generated()}
    run = multi.generated()[0]
    direct = knockout_run(tiny_bridges["llama"], run.layout, run.mode, 1e-6, 2, block="early")
    saved = next(r for r in record.runs if r.run == run.name).blocks["early"]
    assert [(s.step, s.arm, s.n_keys, s.kept_changed) for s in saved] == [(d.step, d.arm, d.n_keys, d.kept_changed) for d in direct]
    assert [s.kl for s in saved] == pytest.approx([d.kl for d in direct], rel=1e-6, abs=1e-12)
    for name in ("exp1_isolated", "pruning"):  # only the multi-prompt experiment is knocked out
        assert not (report["folder"] / "runs" / name / "knockout.json").exists()


def test_the_report_renders_the_knockout(report):
    md = report["md"]
    assert "## Intervention: the Knock-out" in md and "**The knock-out** (an intervention" in md
    assert "batched forwards" in md and "**Per layer block**" in md
    causal = read_causal(parse_metrics(report["metrics_text"]).multi_prompt)
    assert causal is not None and causal.knockout.status == ""
    assert {(b.mode, b.block) for b in causal.knockout.blocks} == {
        (m, b) for m in ("isolated", "visible") for b in ("all", "early", "middle", "late")
    }
    assert '"key-attention"' in report["html"] or "key-attention" in report["html"]
    assert "**Heads over every step and prompt**" in md


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "pair.toml").write_text('name = "pair"\nprompt = "t1 t17 t42 t5"\nmodes = ["isolated", "visible"]\n' + COMMON)
    (tmp_path / "multi.toml").write_text(
        'name = "multi"\nprompts = ["t1 t17 t42 t5", "t1 t9 t33", "t1 t50 t60"]\nmodes = ["isolated", "visible"]\n' + COMMON
    )
    return tmp_path


def test_a_rerun_keeps_the_knockout_and_a_damaged_one_is_not_used(tmp_path, tiny_dirs, capsys):
    folder = _folder(tmp_path)
    assert main(["analyze", str(folder), "--model", str(tiny_dirs["llama"])]) == 0
    out = "".join(capsys.readouterr())
    assert "multi: knock-out took" in out and "pair: knock-out" not in out
    saved = folder / "runs" / "multi" / "knockout.json"
    before = saved.read_bytes()
    assert main(["analyze", str(folder), "--model", str(tiny_dirs["llama"])]) == 0
    assert "multi: kept the knock-out" in "".join(capsys.readouterr()) and saved.read_bytes() == before

    data = json.loads(before)
    data["seconds"] = 123.0  # edited: no longer matches its checksum
    saved.write_text(json.dumps(data))
    assert main(["analyze", str(folder / "runs")]) == 0  # saved runs only: the report says why it is not used
    md = (folder / "runs" / "report" / "FINDINGS.md").read_text()
    assert "does not match its own checksum" in md

    saved.unlink()  # runs saved without the knock-out (an older analyze) still load; the report says it was not run
    assert main(["analyze", str(folder / "runs"), "--overwrite"]) == 0
    md = (folder / "runs" / "report" / "FINDINGS.md").read_text()
    assert "not run (no knockout.json" in md and "## Intervention: the Knock-out" in md

    assert main(["analyze", str(folder), "--model", str(tiny_dirs["llama"])]) == 0  # with the model: computed again
    assert "multi: knock-out took" in "".join(capsys.readouterr()) and saved.is_file()

