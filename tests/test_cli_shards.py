"""Sharded runs across processes: concurrent `run --shard i/n` processes, `merge`, and the Slurm array script."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tempo_lens.cli import main
from tempo_lens.experiment import load_experiment

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm_array.sh"
CONFIG = """name = "sharded"
prompts = ["t1 t17 t42 t5", "t1 t9 t33", "t1 t50 t60 t70", "t1 t8", "t1 t3 t4 t90 t91"]
threshold = 1e-6
max_parallel = 3
max_steps = 3
modes = ["isolated", "visible"]
controls = ["unique_positions", "toggled_mask"]
batch_size = 1   # exact equality needs the same rows per forward in every split (batches agree to float noise)

[pruning]
attention_threshold = 1e9   # every earlier set collapses: pruning state must survive sharding
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _assert_same_runs(merged, whole) -> None:
    """Same runs (by name), each with the same layout, token texts, mode, layers, meta and attention arrays."""
    assert sorted(r.name for r in merged.runs) == sorted(r.name for r in whole.runs)
    assert [r.name for r in merged.generated()] == [r.name for r in whole.generated()]
    for run in whole.runs:
        other = merged.run(run.name)
        assert other.layout.to_dict() == run.layout.to_dict(), run.name   # token ids, steps, positions, probs, pruning
        assert (other.prompt, other.mode, other.layers, other.token_strings, other.meta) == \
            (run.prompt, run.mode, run.layers, run.token_strings, run.meta), run.name
        assert sorted(other.attention) == sorted(run.attention), run.name
        for step, array in run.attention.items():
            np.testing.assert_array_equal(other.attention[step], array, err_msg=f"{run.name} step {step}")


@pytest.fixture(scope="module")
def sharded(tiny_dirs, tmp_path_factory):
    """Three shard processes and one unsharded process of one config, all started at once."""
    root = tmp_path_factory.mktemp("shards")
    config = root / "exp.toml"
    config.write_text(CONFIG)
    base = [sys.executable, "-m", "tempo_lens.cli", "run", str(config), "--model", str(tiny_dirs["llama"])]
    commands = [base + ["--out", str(root / "out"), "--shard", f"{i}/3"] for i in range(3)]
    commands.append(base + ["--out", str(root / "whole")])
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()) for c in commands]
    for proc in procs:
        _out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    return root


def test_concurrent_shards_merge_to_the_unsharded_run(sharded, tmp_path, capsys):
    out = shutil.copytree(sharded / "out", tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["shard-0-of-3", "shard-1-of-3", "shard-2-of-3"]
    whole = load_experiment(sharded / "whole")
    assert len(whole.generated()) == 10 and any(r.layout.pruned_at != [-1] * len(r.layout) for r in whole.runs)
    _assert_same_runs(load_experiment(out), whole)   # merged on load

    kept = tmp_path / "merged-copy"
    assert main(["merge", str(out), "--out", str(kept)]) == 0   # to another folder: the shards stay
    assert (out / "shard-0-of-3").is_dir() and load_experiment(kept).shard is None
    assert main(["merge", str(out)]) == 0   # in place: one folder replaces the shards
    assert sorted(p.name for p in out.iterdir()) == ["attention.npz", "metadata.json"]
    merged = load_experiment(out)
    assert merged.shard is None
    _assert_same_runs(merged, whole)
    assert main(["merge", str(out)]) == 0   # a second merge (a rerun merge job) changes nothing
    assert "nothing to merge" in capsys.readouterr().err


def test_merge_refuses_missing_shards_and_single_shards(sharded, tmp_path, capsys):
    partial = tmp_path / "partial"
    for i in (0, 2):
        shutil.copytree(sharded / "out" / f"shard-{i}-of-3", partial / f"shard-{i}-of-3")
    assert main(["merge", str(partial)]) == 2
    assert main(["merge", str(partial / "shard-0-of-3")]) == 2
    err = capsys.readouterr().err
    assert "expected ['0/3', '1/3', '2/3']" in err and "is shard 0/3" in err
    assert sorted(p.name for p in partial.iterdir()) == ["shard-0-of-3", "shard-2-of-3"]   # nothing changed


# ---- scripts/slurm_array.sh --------------------------------------------------------------------

def _script(args, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env={**os.environ, **env}, cwd=cwd)


def test_slurm_task_runs_its_shard(tmp_path):
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3", "TEMPO_LENS": "echo tempo-lens", "MODEL": "m dir"}
    proc = _script(["exp.toml", "out dir"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "tempo-lens run exp.toml --out out dir --shard 1/3 --model m dir"
    (tmp_path / "out dir" / "shard-1-of-3").mkdir(parents=True)
    (tmp_path / "out dir" / "shard-1-of-3" / "metadata.json").write_text("{}")
    proc = _script(["exp.toml", "out dir"], env, tmp_path)   # a resubmitted array skips finished shards
    assert proc.returncode == 0 and "already complete" in proc.stdout


def test_slurm_submit_queues_the_array_then_the_merge(tmp_path):
    log = tmp_path / "sbatch.log"
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" "--" >> {log}\nn=$(grep -c -- "^--$" {log})\necho "$((100 + n))"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "exp.toml").write_text(CONFIG)
    env = {"PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}", "SBATCH_ARGS": "--partition=cpu"}
    proc = _script(["exp.toml", "runs/exp", "3"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    array, merge = (call.strip().splitlines() for call in log.read_text().split("--\n")[:2])
    assert "--array=0-2" in array and "--partition=cpu" in array and "--export=ALL,SHARDS=3" in array
    assert array[-3:] == [str(SCRIPT), "exp.toml", "runs/exp"]
    assert "--dependency=afterok:101" in merge and merge[merge.index("--wrap") + 1] == "tempo-lens merge runs/exp"
    assert "--partition=cpu" not in merge
    assert "array job 101" in proc.stdout and "merge job 102" in proc.stdout
    assert _script(["missing.toml", "runs/exp"], env, tmp_path).returncode == 2
    assert _script(["exp.toml", "runs/exp", "0"], env, tmp_path).returncode == 2
