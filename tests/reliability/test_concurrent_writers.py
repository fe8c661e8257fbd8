"""Writers and what they may touch (issue 21, classes 1-5): concurrent writers, planted links at temporary
names, folders that merely look like ours, ``--overwrite`` and ``shard-*`` folders, two models with one
folder name.

The promises: writers of one folder hold its lock (real processes below) and a target another process
wrote after the check is never replaced; temporary files are created exclusively inside a fresh folder
of ours, so a planted link is never written through; only what this program provably made (writer in
the name *and* a marker inside naming that folder) is ever removed or restored.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tempo_lens.io.atomic import MARKER, folder_lock, owner_tag, write_files
from tempo_lens.errors import ExperimentFileError
from tempo_lens.experiment import (
    config_from_dict,
    load_experiment,
    run_experiment,
    save_experiment,
)
from tempo_lens.analysis.metrics.cross_model import model_folders
from tempo_lens.app.outputs import MANIFEST, OutputPlan
from tests.reliability.conftest import (
    assert_clean_refusal,
    dead_owner_tag,
    run_cli,
    snapshot,
    subprocess_env,
)

FILES = {"FINDINGS.md": "# report\n", "report.html": "<html></html>\n", "metrics.json": "{}\n"}


@pytest.fixture(scope="module")
def experiment(tiny_llama):
    config = config_from_dict({"name": "w", "prompts": ["t1 t17 t42"], "threshold": 1e-6, "max_parallel": 2, "max_steps": 2})
    return run_experiment(config, tiny_llama)


@pytest.fixture(scope="module")
def other_experiment(tiny_llama):
    config = config_from_dict({"name": "user", "prompts": ["t1 t9 t33"], "threshold": 1e-6, "max_parallel": 2, "max_steps": 2})
    return run_experiment(config, tiny_llama)


def _prompts(folder: Path) -> list[str]:
    return [r.prompt for r in load_experiment(folder).runs]


# ---- class 1: concurrent writers -----------------------------------------------------------------------

def test_a_run_written_while_analyze_ran_is_not_overwritten(experiment, other_experiment, tmp_path):
    plan = OutputPlan(tmp_path)
    plan.check(["multi"])  # analyze checks at its start: nothing there yet
    save_experiment(other_experiment, tmp_path / "runs" / "multi")  # `tempo-lens run --out c4/runs/multi` meanwhile
    before = snapshot(tmp_path)
    with pytest.raises(ExperimentFileError, match="another process"):
        plan.save_run(experiment, "multi")
    assert snapshot(tmp_path) == before and _prompts(tmp_path / "runs" / "multi") == ["t1 t9 t33"]


def test_a_run_whose_target_analyze_wrote_meanwhile_is_refused(experiment, other_experiment, tmp_path):
    from tempo_lens.experiment import check_can_write

    target = tmp_path / "runs" / "multi"
    seen = check_can_write(target, overwrite=True)  # `tempo-lens run --overwrite` checks before its run
    OutputPlan(tmp_path).save_run(experiment, "multi")  # analyze finishes first
    before = snapshot(tmp_path)
    with pytest.raises(ExperimentFileError, match="another process"):
        save_experiment(other_experiment, target, overwrite=True, expect=seen)
    assert snapshot(tmp_path) == before


def test_two_analyzes_keep_each_others_manifest_entries(experiment, tmp_path):
    first, second = OutputPlan(tmp_path), OutputPlan(tmp_path)  # both read the (empty) manifest at start
    first.check(["a"])
    second.check(["b"])
    first.save_run(experiment, "a")
    second.save_run(experiment, "b")
    first.write_report(FILES)
    third = OutputPlan(tmp_path)
    assert set(third.manifest.runs) == {"a", "b"}
    third.check(["a", "b"])  # a third analyze recognises both as its own output


def test_an_edited_report_file_between_check_and_write_is_not_replaced(tmp_path):
    OutputPlan(tmp_path).write_report(FILES)
    plan = OutputPlan(tmp_path)
    plan.check()
    (tmp_path / "report" / "FINDINGS.md").write_text("edited by hand while analyze ran")
    with pytest.raises(ExperimentFileError, match="edited since|another process"):
        plan.write_report(FILES)
    assert (tmp_path / "report" / "FINDINGS.md").read_text() == "edited by hand while analyze ran"


HOLD = r"""
import sys, time
from pathlib import Path
from tempo_lens.io.atomic import folder_lock
with folder_lock(Path(sys.argv[1])):
    print(time.time(), flush=True)
    time.sleep(float(sys.argv[2]))
    print(time.time(), flush=True)
"""


def _holder(folder: Path, seconds: float) -> tuple[subprocess.Popen, float]:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True,
                             env=subprocess_env())
    return child, float(child.stdout.readline())


def test_the_folder_lock_excludes_a_writer_in_another_process(tmp_path):
    child, _ = _holder(tmp_path, 1.5)
    with folder_lock(tmp_path):
        got = time.time()
    released = float(child.stdout.readline())
    child.wait(timeout=30)
    assert got >= released, "the lock was taken while another process held it"


def test_a_writer_that_cannot_get_the_lock_in_time_is_refused_naming_the_folder(tmp_path):
    child, _ = _holder(tmp_path, 3)
    try:
        with pytest.raises(ExperimentFileError, match=rf"process {child.pid} \(.*python.*\) is writing into .*within 0.3 s"):
            with folder_lock(tmp_path, wait_s=0.3):
                pass
    finally:
        child.kill()
        child.wait()


SAVE_AFTER_GO = r"""
import sys, time
from pathlib import Path
from tempo_lens.errors import ExperimentFileError
from tempo_lens.experiment import load_experiment
from tempo_lens.app.outputs import OutputPlan
out, source, go = map(Path, sys.argv[1:4])
experiment = load_experiment(source)
plan = OutputPlan(out)
plan.check(["multi"])
print("checked", flush=True)
while not go.exists():
    time.sleep(0.05)
try:
    plan.save_run(experiment, "multi")
except ExperimentFileError as exc:
    print("refused:", exc, flush=True)
    sys.exit(3)
"""


def test_real_processes_an_analyze_never_replaces_a_run_written_after_its_check(experiment, other_experiment, tmp_path):
    source = save_experiment(experiment, tmp_path / "source")
    out, go = tmp_path / "c4", tmp_path / "go"
    analyze = subprocess.Popen([sys.executable, "-c", SAVE_AFTER_GO, str(out), str(source), str(go)],
                               stdout=subprocess.PIPE, text=True, env=subprocess_env())
    assert analyze.stdout.readline().strip() == "checked"
    save_experiment(other_experiment, out / "runs" / "multi")  # the user's run lands in between
    before = snapshot(out)
    go.touch()
    rest = analyze.communicate(timeout=120)[0]
    assert analyze.returncode == 3 and "another process" in rest, rest
    assert snapshot(out) == before and _prompts(out / "runs" / "multi") == ["t1 t9 t33"]


# ---- class 2: planted links at temporary names -------------------------------------------------------

def test_links_planted_at_the_old_temporary_names_are_never_written_through(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    (out / "report").mkdir(parents=True)
    victims = {}
    for pid in {os.getpid(), *range(os.getpid() - 3, os.getpid() + 4)}:
        for planted in (out / "report" / f".FINDINGS.md.tmp-{pid}", out / f"{MANIFEST}.tmp-{pid}",
                        out / "report" / f".report.html.tmp-{pid}", out / "report" / f".metrics.json.tmp-{pid}"):
            victim = outside / f"{planted.name}.victim"
            victim.write_text("precious")
            planted.symlink_to(victim)
            victims[planted] = victim
    before = snapshot(outside)
    OutputPlan(out).write_report(FILES)
    assert snapshot(outside) == before
    for name in FILES:
        path = out / "report" / name
        assert not path.is_symlink() and path.read_text() == FILES[name]
    assert not (out / MANIFEST).is_symlink() and json.loads((out / MANIFEST).read_text())["report"]
    assert all(p.is_symlink() for p in victims)  # not ours: left alone


def test_write_files_never_opens_an_existing_name(tmp_path, monkeypatch):
    """Every new file is opened with O_CREAT | O_EXCL | O_NOFOLLOW inside a fresh folder of ours."""
    import tempo_lens.io.atomic as atomic

    opened = []
    real_open = os.open

    def spy(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            opened.append((Path(path), flags))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "open", spy)
    write_files(tmp_path, {"a.txt": b"one", "b.txt": b"two"})
    data_files = [(p, f) for p, f in opened if p.name in ("a.txt", "b.txt")]
    assert len(data_files) == 2
    for path, flags in data_files:
        assert flags & os.O_EXCL and flags & os.O_NOFOLLOW and path.parent != tmp_path
        assert path.parent.name.startswith(".tempo-lens-files.tmp-" + owner_tag())
    assert (tmp_path / "a.txt").read_bytes() == b"one" and [p.name for p in tmp_path.iterdir()] != []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tempo-lens-files.tmp-")]


def test_a_manifest_that_is_a_link_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("{}")
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).symlink_to(elsewhere)
    with pytest.raises(ExperimentFileError, match="not a plain file"):
        OutputPlan(out)


# ---- class 3: only what this program provably made is removed or restored -----------------------------

def _user_folder(path: Path, age: float = 0.0) -> Path:
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


LOOKALIKES = {
    "user_backup": lambda root: _user_folder(root / "runs" / ".iso.old-mybackup"),
    "old_user_tmp": lambda root: _user_folder(root / "runs" / ".iso.tmp-keep", age=2 * 3600),
    "writer_named_without_marker": lambda root: _user_folder(root / "runs" / f".iso.tmp-{dead_owner_tag()}-abcdefgh"),
    "backup_named_without_marker": lambda root: _user_folder(root / "runs" / f".iso.old-{dead_owner_tag()}-1700000000000"),
    "report_tmp_file": lambda root: (root / "report").mkdir(exist_ok=True) or (root / "report" / ".report.html.tmp-4000000-mybackup").write_text("mine"),
    "files_tmp_without_marker": lambda root: _user_folder(root / "report" / f".tempo-lens-files.tmp-{dead_owner_tag()}-x"),
    "marker_is_a_fifo": lambda root: os.mkfifo(_user_folder(root / "runs" / f".iso.tmp-{dead_owner_tag()}-fifo0000") / MARKER),
}


@pytest.mark.parametrize("case", sorted(LOOKALIKES))
def test_a_plain_analyze_leaves_lookalikes_alone(case, experiment, tmp_path):
    OutputPlan(tmp_path).save_run(experiment, "iso")
    LOOKALIKES[case](tmp_path)
    before = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(("runs/iso/", "report/", MANIFEST))}
    before_report = {k: v for k, v in snapshot(tmp_path).items() if k.startswith("report/.")}
    plan = OutputPlan(tmp_path)
    plan.check(["iso"])
    plan.save_run(experiment, "iso")
    plan.write_report(FILES)
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith(("runs/iso/", "report/", MANIFEST))} == before
    assert {k: v for k, v in after.items() if k.startswith("report/.")} == before_report


def test_overwrite_keeps_a_sibling_user_backup(experiment, tmp_path):
    save_experiment(experiment, tmp_path / "exp1")
    _user_folder(tmp_path / ".exp1.old-june")
    save_experiment(experiment, tmp_path / "exp1", overwrite=True)
    assert (tmp_path / ".exp1.old-june" / "notes.txt").read_text() == "mine"


def test_a_complete_experiment_named_like_a_backup_is_not_restored(experiment, tmp_path):
    save_experiment(experiment, tmp_path / "keep")
    os.replace(tmp_path / "keep", tmp_path / ".exp1.old-june")
    before = snapshot(tmp_path)
    with pytest.raises(ExperimentFileError, match="does not exist"):
        load_experiment(tmp_path / "exp1")
    save_experiment(experiment, tmp_path / "exp1", overwrite=True)  # and --overwrite then has nothing to destroy
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("exp1/")} == before


def test_a_copied_backup_of_ours_under_another_name_is_not_restored(experiment, tmp_path):
    """The marker names the folder it was written for: a copy (or a rename) no longer matches it."""
    save_experiment(experiment, tmp_path / "src")
    fake = tmp_path / f".exp1.old-{dead_owner_tag()}-1700000000000"
    shutil.copytree(tmp_path / "src", fake)
    (fake / MARKER).write_text(f".exp1.old-{dead_owner_tag()}-1600000000000")
    with pytest.raises(ExperimentFileError):
        load_experiment(tmp_path / "exp1")
    assert fake.is_dir()


def test_a_real_interrupted_overwrite_is_still_restored(experiment, tmp_path):
    """Our own backup (writer in the name, marker inside) of an ended writer is put back, marker removed."""
    save_experiment(experiment, tmp_path / "exp1")
    backup = tmp_path / f".exp1.old-{dead_owner_tag()}-1700000000000"
    (tmp_path / "exp1" / MARKER).write_text(backup.name)
    os.replace(tmp_path / "exp1", backup)
    with pytest.warns(UserWarning, match="restored"):
        assert load_experiment(tmp_path / "exp1").runs
    assert not backup.exists() and not (tmp_path / "exp1" / MARKER).exists()


# ---- class 4: --overwrite and shard-* folders ---------------------------------------------------------

@pytest.mark.parametrize("inside", ["shard-notes", "shard-0-of-2"])
def test_overwrite_never_removes_a_user_folder_named_shard(inside, experiment, tiny_dirs, tmp_path):
    save_experiment(experiment, tmp_path / "exp")
    _user_folder(tmp_path / "exp" / inside)
    before = snapshot(tmp_path)
    with pytest.raises(ExperimentFileError, match=inside):
        save_experiment(experiment, tmp_path / "exp", overwrite=True)
    config = tmp_path / "c.toml"
    config.write_text(f'prompt = "t1 t2"\nmodel = "{tiny_dirs["llama"]}"\nmax_steps = 1\n')
    rc, _, err = run_cli(["run", str(config), "--out", str(tmp_path / "exp"), "--overwrite"])
    assert_clean_refusal(rc, err, inside)
    assert {k: v for k, v in snapshot(tmp_path).items() if k != "c.toml"} == before


# ---- class 5: two models, one folder name -------------------------------------------------------------

def test_models_with_one_base_name_get_their_own_folders():
    folders = model_folders(["qwen2.5-0.5b", "/ckpt/qwen2.5-0.5b", "./b/qwen2.5-0.5b/", "smollm2-135m"])
    assert len(set(folders.values())) == 4 and folders["smollm2-135m"] == "smollm2-135m"
    assert model_folders(["qwen2.5-0.5b"]) == {"qwen2.5-0.5b": "qwen2.5-0.5b"}


def test_a_models_folder_of_another_model_is_not_replaced_without_overwrite(experiment, tmp_path):
    OutputPlan(tmp_path, model="qwen2.5-0.5b").save_run(experiment, "pair")
    with pytest.raises(ExperimentFileError, match="qwen2.5-0.5b"):
        OutputPlan(tmp_path, model="/ckpt/other").check(["pair"])
    OutputPlan(tmp_path, model="/ckpt/other", overwrite=True).check(["pair"])


def test_analyze_models_with_one_base_name_keeps_both(tiny_dirs, tmp_path):
    from tempo_lens.cli import main

    a, b = tmp_path / "a" / "llama", tmp_path / "b" / "llama"
    shutil.copytree(tiny_dirs["llama"], a)
    shutil.copytree(tiny_dirs["llama3_scaling"], b)
    study = tmp_path / "study"
    study.mkdir()
    (study / "pair.toml").write_text('name = "pair"\nprompt = "t1 t17 t42 t5"\nmodes = ["isolated", "visible"]\n'
                                     'threshold = 1e-6\nmax_parallel = 2\nmax_steps = 2\n')
    assert main(["analyze", str(study), "--model", str(a)]) == 0
    assert main(["analyze", str(study), "--models", f"{a},{b}"]) == 0
    assert len(list((study / "models").iterdir())) == 2
    metrics = json.loads((study / "report" / "metrics.json").read_text())
    assert len(metrics["cross_model"]) == 2
