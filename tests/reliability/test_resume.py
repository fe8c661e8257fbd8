"""Issue 32, class 5: a resume always finishes (damaged chunks are generated again, orphaned progress is removed);
class 8: the study runner resumes like analyze and gives models of one base name their own folders."""

from __future__ import annotations

import json
import shutil

import pytest

from tempo_lens.experiment import load_experiment
from tests.reliability.conftest import assert_clean_refusal, run_cli
from tests.reliability.test_input_bounds import _analyze_folder, generated  # noqa: F401  (a fixture)


def _interrupted(folder, generated):  # noqa: F811
    """analyze stopped after the first chunk of ``multi``: its progress folder holds chunk-00000 only."""
    generated.stop_after = 4
    assert run_cli(["analyze", str(folder)])[0] == 130
    (partial,) = [p for p in (folder / "runs").iterdir() if p.name.startswith(".multi.partial-")]
    generated.clear()
    generated.stop_after = None
    return partial


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-40])


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "arrays_truncated": lambda chunk: _truncate(chunk / "attention.npz"),
    "arrays_byte_flipped": lambda chunk: _flip(chunk / "attention.npz"),
    "arrays_deleted": lambda chunk: (chunk / "attention.npz").unlink(),
    "metadata_truncated": lambda chunk: _truncate(chunk / "metadata.json"),
    "metadata_deleted": lambda chunk: (chunk / "metadata.json").unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_chunk_is_generated_again_and_the_resume_finishes(tiny_dirs, tmp_path, generated, damage):  # noqa: F811
    folder = _analyze_folder(tmp_path / "analyses", tiny_dirs["llama"])
    partial = _interrupted(folder, generated)
    DAMAGE[damage](partial / "chunk-00000")
    rc, _, err = run_cli(["analyze", str(folder)])
    assert rc == 0, err
    assert generated.prompts().count("t1 t17 t42") == 2, "the damaged chunk was not generated again"
    assert load_experiment(folder / "runs" / "multi").runs and not partial.exists()


def test_the_run_command_resumes_past_a_damaged_chunk_too(tiny_dirs, tmp_path, monkeypatch):
    from tempo_lens.experiment import stream

    monkeypatch.setattr(stream, "STREAM_ABOVE", 1)
    monkeypatch.setattr(stream, "CHUNK_PROMPTS", 1)
    config = tmp_path / "long.toml"
    config.write_text(f'prompts = ["t1 t17 t42", "t1 t9"]\nmodel = "{tiny_dirs["llama"]}"\nthreshold = 1e-6\n'
                      'max_parallel = 2\nmax_steps = 2\n')
    real, calls = stream.run_experiment, []

    def stop_at_the_second(*args, **kwargs):
        calls.append(kwargs["prompt_indices"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(stream, "run_experiment", stop_at_the_second)
    assert run_cli(["run", str(config), "--out", str(tmp_path / "out")])[0] == 130
    (partial,) = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    _truncate(partial / "chunk-00000" / "attention.npz")
    monkeypatch.setattr(stream, "run_experiment", lambda *a, **k: calls.append(k["prompt_indices"]) or real(*a, **k))
    calls.clear()
    for argv in (["run", str(config), "--out", str(tmp_path / "out")],):
        rc, _, err = run_cli(argv)
        assert rc == 0, err
    assert calls == [[0], [1]] and "damaged" in err
    assert len(load_experiment(tmp_path / "out").runs) == 2


def test_a_chunk_that_is_not_ours_is_never_removed_and_the_folder_to_delete_is_named(tiny_dirs, tmp_path, generated):  # noqa: F811
    folder = _analyze_folder(tmp_path / "analyses", tiny_dirs["llama"])
    partial = _interrupted(folder, generated)
    chunk = partial / "chunk-00000"
    (chunk / "notes.txt").write_text("mine")
    rc, _, err = run_cli(["analyze", str(folder)])
    assert_clean_refusal(rc, err, str(partial), "delete")
    assert (chunk / "notes.txt").read_text() == "mine"


def test_changed_prompts_remove_the_orphaned_progress_folder(tiny_dirs, tmp_path, generated):  # noqa: F811
    folder = _analyze_folder(tmp_path / "analyses", tiny_dirs["llama"])
    orphan = _interrupted(folder, generated)
    multi = folder / "multi.toml"
    multi.write_text(multi.read_text().replace('"t1 t50 t60"', '"t1 t50 t61"'))
    rc, _, err = run_cli(["analyze", str(folder)])
    assert rc == 0, err
    assert not orphan.exists(), "the progress of the old prompts was left behind for ever"
    assert [p.name for p in (folder / "runs").iterdir() if ".partial-" in p.name] == []
    assert "removed" in err and orphan.name in err


def test_an_orphan_in_use_by_another_process_is_left_alone(tiny_dirs, tmp_path):
    import subprocess
    import sys

    from tempo_lens.io.atomic import owned_marker
    from tempo_lens.experiment.stream import remove_orphans
    from tests.reliability.conftest import subprocess_env

    target = tmp_path / "out"
    busy = tmp_path / ".out.partial-aaaaaaaaaaaa"
    busy.mkdir()
    owned_marker(busy)
    mine = tmp_path / ".out.partial-notours00000"
    mine.mkdir()  # no marker: not ours, never removed
    hold = "import sys,time; from pathlib import Path; from tempo_lens.io.atomic import folder_lock\n" \
           "with folder_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", hold, str(busy)], stdout=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        assert child.stdout.readline().strip() == "held"
        remove_orphans(target, tmp_path / ".out.partial-bbbbbbbbbbbb", print)
        assert busy.is_dir() and mine.is_dir()
    finally:
        child.kill()
        child.wait()
    remove_orphans(target, tmp_path / ".out.partial-bbbbbbbbbbbb", print)
    assert not busy.exists() and mine.is_dir()


# ---- class 8: the study runner ------------------------------------------------------------------------

def _study_folder(folder):
    settings = "threshold = 1e-6\nmax_parallel = 2\nmax_steps = 2\n"
    folder.mkdir()
    for mode in ("isolated", "visible"):
        (folder / f"exp1_{mode}.toml").write_text(f'name = "exp1_{mode}"\nprompt = "t1 t17 t42 t5"\nmode = "{mode}"\n' + settings)
    (folder / "study.toml").write_text('name = "study"\nprompts = ["t1 t17 t42 t5", "t1 t9 t33"]\n'
                                       'modes = ["isolated", "visible"]\n' + settings)
    return folder


@pytest.fixture
def two_models_named_a(tiny_dirs, tmp_path):
    from tests.helpers import build_tiny_model

    first = shutil.copytree(tiny_dirs["llama"], tmp_path / "x" / "a")
    second = build_tiny_model("llama", tmp_path / "y" / "a", seed=3)
    return [str(first), str(second)]


def _study(argv):
    import contextlib
    import io

    from tempo_lens.app.study import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def test_two_models_of_one_base_name_each_get_their_own_folder(two_models_named_a, tmp_path):
    folder = _study_folder(tmp_path / "study")
    rc, out, err = _study([str(folder), "--models", ",".join(two_models_named_a), "--chunks", "1"])
    assert rc == 0, err
    assert "another process" not in out + err and "skipping" not in out
    reports = sorted(p.parent.parent.name for p in (folder / "models").glob("*/report/metrics.json"))
    assert len(reports) == 2 and len(set(reports)) == 2
    recorded = {json.loads((folder / "models" / r / ".tempo-lens-analyze.json").read_text())["model"] for r in reports}
    assert recorded == set(two_models_named_a)
    made_with = {json.loads((folder / "models" / r / "runs" / "study" / "metadata.json").read_text())["model"]["fingerprint"]
                 for r in reports}
    assert len(made_with) == 2, "both folders hold one model's runs"


def test_a_study_rerun_keeps_what_it_finished(tiny_dirs, tmp_path, monkeypatch):
    import tempo_lens.generation as generation

    folder = _study_folder(tmp_path / "study")
    argv = [str(folder), "--models", str(tiny_dirs["llama"]), "--chunks", "1"]
    assert _study(argv)[0] == 0
    first = (folder / "report" / "metrics.json").read_text()
    calls = []
    real = generation.generate_batch
    monkeypatch.setattr(generation, "generate_batch", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    rc, out, err = _study(argv)
    assert rc == 0, err
    assert calls == [] and ": loading" not in out, "a finished study was generated again"
    assert out.count("kept the runs") == 3
    assert json.loads((folder / "report" / "metrics.json").read_text())["single_run"] == json.loads(first)["single_run"]

    (folder / "study.toml").write_text((folder / "study.toml").read_text().replace("t1 t9 t33", "t1 t9 t34"))
    calls.clear()
    rc, out, err = _study(argv)
    assert rc == 0, err
    assert sorted(p for call in calls for p in call) == sorted(["t1 t17 t42 t5", "t1 t9 t34"] * 2), "only the changed config runs"


@pytest.mark.parametrize("signal_class", ["KeyboardInterrupt", "Terminated"])
def test_ctrl_c_in_the_study_is_one_line(tmp_path, monkeypatch, signal_class):
    import tempo_lens.app.study as study_module
    from tempo_lens.io.signals import Terminated

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt if signal_class == "KeyboardInterrupt" else Terminated("signal 15")

    monkeypatch.setattr(study_module, "study", interrupted)
    rc, out, err = _study([str(tmp_path)])
    assert rc == (130 if signal_class == "KeyboardInterrupt" else 143)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("interrupted" if signal_class == "KeyboardInterrupt" else "terminated")
