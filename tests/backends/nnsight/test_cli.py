"""``--backend nnsight`` on the command line: the same JSON as the bridge, runs and similarity pruning."""

from __future__ import annotations

import json

from tempo_lens.cli import main
from tempo_lens.experiment import load_experiment


def _json(capsys, args) -> dict:
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_generate_json_is_the_bridges(tiny_dirs, capsys):
    base = ["generate", "t1 t17 t42", "--model", str(tiny_dirs["gemma3"]), "--threshold", "0.02", "--max-steps", "4", "--json"]
    for extra in ([], ["--prune-similarity", "-1"], ["--mode", "visible", "--prune-threshold", "1e9"]):
        bridge = _json(capsys, base + extra)
        nnsight = _json(capsys, base + extra + ["--backend", "nnsight"])
        assert nnsight["steps"] and max(len(s["token_ids"]) for s in nnsight["steps"]) >= 2
        assert [s["token_ids"] for s in nnsight["steps"]] == [s["token_ids"] for s in bridge["steps"]]
        assert [s["pruned"] for s in nnsight["steps"]] == [s["pruned"] for s in bridge["steps"]]
        assert nnsight.keys() == bridge.keys() and nnsight["text"] == bridge["text"]


def test_run_with_the_nnsight_backend(tiny_dirs, tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text('prompts = ["t1 t17 t42", "t1 t5"]\nthreshold = 1e-6\nmax_parallel = 2\nmax_steps = 2\ncapture = true\n')
    for backend in ("bridge", "nnsight"):
        out = tmp_path / backend
        assert main(["run", str(config), "--out", str(out), "--model", str(tiny_dirs["qwen2"]), "--backend", backend]) == 0
    ours, theirs = load_experiment(tmp_path / "nnsight"), load_experiment(tmp_path / "bridge")
    assert [r.layout.token_ids for r in ours.runs] == [r.layout.token_ids for r in theirs.runs]
    assert sorted(p.name for p in (tmp_path / "nnsight").iterdir()) == sorted(p.name for p in (tmp_path / "bridge").iterdir())


def test_analyze_with_the_nnsight_backend(tiny_dirs, tmp_path):
    """Both modes plus the control replays (unique positions, toggled mask) through nnsight, into the same report."""
    settings = 'threshold = 1e-6\nmax_parallel = 2\nmax_steps = 3\ncapture = true\n'
    for backend in ("bridge", "nnsight"):
        folder = tmp_path / backend
        folder.mkdir()
        (folder / "pair.toml").write_text('name = "pair"\nprompt = "t1 t17 t42 t5"\nmodes = ["isolated", "visible"]\ncontrols = ["unique_positions", "toggled_mask"]\n' + settings)
        assert main(["analyze", str(folder), "--model", str(tiny_dirs["llama"]), "--backend", backend]) == 0
    ours, theirs = load_experiment(tmp_path / "nnsight" / "runs" / "pair"), load_experiment(tmp_path / "bridge" / "runs" / "pair")
    assert [r.name for r in ours.runs] == [r.name for r in theirs.runs] and len(ours.runs) > 2
    assert [r.layout.token_ids for r in ours.runs] == [r.layout.token_ids for r in theirs.runs]
    assert (tmp_path / "nnsight" / "report" / "FINDINGS.md").is_file()
