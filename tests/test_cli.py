"""The tempo-lens command: generate (text and the JSON schema), run, and the embedded-model smoke run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tempo_lens.cli import main
from tempo_lens.experiment import load_experiment

REQUIRED = {"model": str, "prompt": str, "mode": str, "threshold": float, "next_token_source": str,
            "prompt_token_ids": list, "steps": list, "text": str, "clean_text": str}
STEP_REQUIRED = {"step": int, "logical_position": int, "token_ids": list, "tokens": list, "probs": list, "pruned": list}


def test_generate_json_schema(tiny_dirs, tiny_llama, capsys):
    args = ["generate", "t1 t17 t42", "--model", str(tiny_dirs["llama"]), "--threshold", "1e-6", "--max-parallel", "3",
            "--max-steps", "3", "--mode", "visible", "--json", "--prune-threshold", "1e9"]
    assert main(args) == 0
    out = capsys.readouterr().out
    data = json.loads(out)  # exactly one JSON object, nothing else on stdout
    for key, kind in REQUIRED.items():
        assert isinstance(data[key], kind), key
    assert data["mode"] == "visible" and data["threshold"] == 1e-6 and data["prompt"] == "t1 t17 t42"
    assert data["prompt_token_ids"] == tiny_llama.tokenizer("t1 t17 t42")["input_ids"]
    P = len(data["prompt_token_ids"])
    for i, step in enumerate(data["steps"]):
        for key, kind in STEP_REQUIRED.items():
            assert isinstance(step[key], kind), key
        assert step["step"] == i and step["logical_position"] == P + i
        assert len(step["token_ids"]) == len(step["tokens"]) == len(step["probs"]) == len(step["pruned"]) == 3
        assert all(isinstance(t, int) for t in step["token_ids"]) and all(isinstance(b, bool) for b in step["pruned"])
    assert data["steps"][0]["pruned"] == [False, True, True]  # collapsed after the next step
    assert data["steps"][-1]["pruned"] == [False, False, False]  # the newest set is never scored


def test_no_fast_loads_the_stock_bridge(tiny_dirs, monkeypatch, capsys):
    from tempo_lens.models import loading as model_module
    from tempo_lens.backends.bridge.fast_paths import ENV, fast_paths_on

    loaded = []
    real = model_module.load_model
    monkeypatch.setattr(model_module, "load_model", lambda *a, **k: loaded.append(real(*a, **k)) or loaded[-1])
    monkeypatch.setenv(ENV, "1")
    assert main(["generate", "t1 t17", "--model", str(tiny_dirs["llama"]), "--max-steps", "1", "--no-fast"]) == 0
    assert fast_paths_on(loaded[0]) == []
    assert os.environ[ENV] == "1"  # in-process, --no-fast lasts for its command only
    monkeypatch.delenv(ENV)
    assert main(["generate", "t1 t17", "--model", str(tiny_dirs["llama"]), "--max-steps", "1", "--no-fast"]) == 0
    assert ENV not in os.environ and fast_paths_on(loaded[1]) == []
    capsys.readouterr()


def test_version_has_one_source(capsys):
    """`tempo-lens --version` prints the package version, the one pyproject.toml reads (dynamic)."""
    import tomllib

    import tempo_lens

    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"tempo-lens {tempo_lens.__version__}"
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "tempo_lens.__version__"}


def test_generate_prints_the_bracketed_text(tiny_dirs, capsys):
    assert main(["generate", "t1 t17 t42", "--model", str(tiny_dirs["llama"]), "--threshold", "1e-6",
                 "--max-parallel", "2", "--max-steps", "2"]) == 0
    text = capsys.readouterr().out.strip()
    assert text.startswith("t1 t17 t42") and text.count("[") == 2 and text.count("/") == 2


def test_run_writes_a_folder_and_refuses_to_overwrite(tiny_dirs, tmp_path, capsys):
    config = tmp_path / "exp.toml"
    config.write_text('prompt = "t1 t17 t42"\nthreshold = 1e-6\nmax_parallel = 2\nmax_steps = 2\n')
    out = tmp_path / "out"
    base = ["run", str(config), "--out", str(out), "--model", str(tiny_dirs["llama"])]
    assert main(base) == 0
    assert load_experiment(out).runs[0].layout.n_steps == 2
    assert main(base) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(base + ["--overwrite"]) == 0


def test_embedded_model_from_a_real_process():
    """The issue's smoke run: a bracketed continuation from the embedded model, in a fresh process."""
    exe = Path(sys.executable).with_name("tempo-lens")
    proc = subprocess.run(
        [str(exe), "generate", "The cat sat on the", "--threshold", "0.1", "--max-steps", "10", "--mode", "isolated"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("The cat sat on the") and "[" in proc.stdout and "/" in proc.stdout


def test_generate_with_similarity_pruning(tiny_dirs, capsys):
    base = ["generate", "t1 t17 t42", "--model", str(tiny_dirs["llama"]), "--threshold", "1e-6", "--max-parallel", "2",
            "--max-steps", "3", "--json"]
    assert main(base + ["--prune-similarity", "-1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pruning"]["strategy"] == "similarity"
    assert [s["pruned"] for s in data["steps"]] == [[False, True], [False, True], [False, False]]
    assert main(base + ["--prune-similarity", "x"]) == 2
    assert main(base + ["--prune-similarity", "0.5", "--prune-threshold", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--prune-similarity must be a number" in err and "choose one pruning strategy" in err


def test_config_chooses_the_similarity_strategy(tmp_path):
    from tempo_lens.experiment import pruning_from_config, load_config
    from tempo_lens.pruning import SimilarityPruning

    path = tmp_path / "s.toml"
    path.write_text('prompt = "x"\n[pruning]\nstrategy = "similarity"\nsimilarity_threshold = 0.8\nlayer = 2\n')
    strategy = load_config(path).generation.pruning
    assert isinstance(strategy, SimilarityPruning) and strategy.similarity_threshold == 0.8 and strategy.layer == 2
