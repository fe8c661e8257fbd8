"""Temporary folders of atomic writes: a leftover of an ended writer goes at the next write into the same
target (not after an hour), a folder whose writer may still run is never touched, and SIGTERM or Ctrl-C
during a write removes the write's own folder.

The table gives one leftover per case beside an experiment folder; a write into that folder must remove
exactly the leftovers of ended writers and change nothing else. The real-process tests kill or signal
a write at a fixed point (it prints KILL-POINT, then sleeps) and look at what is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tempo_lens.io.atomic import MARKER, atomic_directory, owner_tag, remove_abandoned
from tempo_lens.experiment import config_from_dict, load_experiment, run_experiment, save_experiment
from tests.reliability.conftest import dead_owner_tag, snapshot, start_slow_run, subprocess_env

HOUR = 3600


@pytest.fixture(scope="module")
def experiment(tiny_llama):
    config = config_from_dict({"name": "tmp", "prompts": ["t1 t17 t42", "t1 t9"], "threshold": 1e-6, "max_parallel": 2,
                               "max_steps": 2})
    return run_experiment(config, tiny_llama)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def _mark(folder: Path, name: str | None = None) -> None:
    """The ownership marker a write puts in its temporary folders and backups: the folder's own name."""
    (folder / MARKER).write_text(name or folder.name)


def _leftover(name: str, age: float = 0.0, marked: bool = True, marker_name: str | None = None):
    def make(root: Path) -> Path:
        folder = root / name.format(dead=dead_owner_tag(), me=owner_tag(), machine=owner_tag().split("-")[0])
        folder.mkdir()
        (folder / "attention.npz").write_bytes(b"half-written")
        if marked:
            _mark(folder, marker_name)
        _age(folder, age)
        return folder

    return make


def _reused_pid(root: Path) -> Path:
    """This process's id with another start time: the process that wrote it has ended, the PID was reused."""
    machine, pid, start = owner_tag().split("-")
    folder = root / f".exp.tmp-{machine}-{pid}-{int(start) + 1000}-reused00"
    folder.mkdir()
    _mark(folder)
    return folder


def _symlink(root: Path) -> Path:
    elsewhere = root / "precious"
    elsewhere.mkdir()
    (elsewhere / "thesis.tex").write_text("two years of work")
    link = root / f".exp.tmp-{dead_owner_tag()}-symlink0"
    link.symlink_to(elsewhere, target_is_directory=True)
    return link


def _file(root: Path) -> Path:
    path = root / f".exp.tmp-{dead_owner_tag()}-aplainfile"
    path.write_text("not a folder")
    return path


LEFTOVERS = {
    "ended_writer_this_machine": (_leftover(".exp.tmp-{dead}-abcdefgh"), True),
    "ended_writer_pid_reused": (_reused_pid, True),
    "ended_writer_backup": (_leftover(".exp.old-{dead}-1700000000000"), True),
    "other_machine_unlocked_for_minutes": (_leftover(".exp.tmp-deadbeef-4242-99-abcdefgh", age=5 * 60), True),
    "no_writer_in_the_name_hours_old": (_leftover(".exp.tmp-killed", age=2 * HOUR, marked=False), False),
    "ended_writer_named_but_no_marker": (_leftover(".exp.tmp-{dead}-abcdefgh", marked=False), False),
    "ended_writer_backup_named_but_no_marker": (_leftover(".exp.old-{dead}-1700000000000", marked=False), False),
    "marker_naming_another_folder": (_leftover(".exp.tmp-{dead}-abcdefgh", marker_name=".exp.tmp-copied"), False),
    "this_process": (_leftover(".exp.tmp-{me}-abcdefgh"), False),
    "this_process_backup": (_leftover(".exp.old-{me}-1700000000000"), False),
    "other_machine_just_created": (_leftover(".exp.tmp-deadbeef-4242-99-abcdefgh"), False),
    "no_writer_in_the_name_recent": (_leftover(".exp.tmp-running", marked=False), False),
    "symlink_named_like_a_leftover": (_symlink, False),
    "file_named_like_a_leftover": (_file, False),
    "leftover_of_another_target": (_leftover(".other.tmp-{dead}-abcdefgh"), False),
    "user_folder": (_leftover("exp.tmp-mine"), False),
}


@pytest.mark.parametrize("case", sorted(LEFTOVERS))
def test_a_write_removes_exactly_the_leftovers_of_ended_writers(case, experiment, tmp_path):
    make, removed = LEFTOVERS[case]
    save_experiment(experiment, tmp_path / "exp")
    leftover = make(tmp_path)
    before = snapshot(tmp_path)
    save_experiment(experiment, tmp_path / "exp", overwrite=True)
    after = snapshot(tmp_path)
    assert (not (leftover.exists() or leftover.is_symlink())) == removed
    inside = {k for k in before if k.startswith(leftover.name + "/")} if removed else set()
    exp_files = {k for k in before if k.startswith("exp/")}
    assert {k: v for k, v in before.items() if k not in inside | exp_files} == {k: v for k, v in after.items() if k not in exp_files}
    assert (tmp_path / "precious" / "thesis.tex").exists() or case != "symlink_named_like_a_leftover"
    assert load_experiment(tmp_path / "exp").runs


def test_the_model_cache_prefix_is_cleaned_the_same_way(tmp_path):
    target = tmp_path / "SmolLM2-fp32"
    dead = tmp_path / f"SmolLM2-fp32.tmp-{dead_owner_tag()}-abcdefgh"
    mine = tmp_path / f"SmolLM2-fp32.tmp-{owner_tag()}-abcdefgh"
    for folder in (dead, mine):
        folder.mkdir()
        _mark(folder)
    with atomic_directory(target, prefix="SmolLM2-fp32.tmp-") as tmp:
        (tmp / "config.json").write_text("{}")
        assert tmp.name.startswith(f"SmolLM2-fp32.tmp-{owner_tag()}-")
    assert not dead.exists() and mine.exists() and (target / "config.json").exists()


# ---- real processes --------------------------------------------------------------------------------

HOLDER = r"""
import sys, time
from pathlib import Path
from tempo_lens.io.atomic import atomic_directory
with atomic_directory(Path(sys.argv[1])) as tmp:
    print(tmp, flush=True)
    time.sleep(300)
"""

FOREIGN_LOCK = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(300)
"""


def _start(script: str, *args: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True, env=subprocess_env())
    return process, process.stdout.readline().strip()


def _end(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()
    process.stdout.close()


def test_a_live_writers_folder_is_kept_until_it_ends(experiment, tmp_path):
    """Another process writing into the same target right now: its folder stays; killed, it goes at the next write."""
    target = tmp_path / "exp"
    holder, line = _start(HOLDER, str(target))
    try:
        folder = Path(line)
        assert folder.is_dir() and folder.parent == tmp_path
        save_experiment(experiment, target)
        assert folder.is_dir(), "a folder of a running write was removed"
    finally:
        _end(holder)
    save_experiment(experiment, target, overwrite=True)
    assert not folder.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_another_machines_folder_goes_only_once_nobody_holds_its_lock(experiment, tmp_path):
    folder = tmp_path / ".exp.tmp-deadbeef-4242-99-abcdefgh"
    folder.mkdir()
    _mark(folder)
    locker, line = _start(FOREIGN_LOCK, str(folder))
    try:
        assert line == "locked"
        _age(folder, HOUR)
        save_experiment(experiment, tmp_path / "exp")
        assert folder.is_dir(), "a locked folder of another machine was removed"
    finally:
        _end(locker)
    assert remove_abandoned(tmp_path / "exp") == [folder] and not folder.exists()


WRITE = r"""
import sys, time
import tempo_lens.experiment.storage as storage
from tempo_lens.cli import main
original = storage.write_arrays
def slow(*args, **kwargs):
    result = original(*args, **kwargs)
    print("KILL-POINT", flush=True)
    time.sleep(300)
    return result
storage.write_arrays = slow
sys.argv = ["tempo-lens", *sys.argv[1:]]
sys.exit(main())
"""


@pytest.fixture
def rewrite(experiment, tmp_path):
    """A previous experiment at ``out`` and a source experiment to write over it with ``tempo-lens merge``."""
    source = tmp_path / "source" / "shard-0-of-1"
    save_experiment(type(experiment)(**{**vars(experiment), "shard": "0/1", "path": None}), source)
    out = save_experiment(experiment, tmp_path / "out")
    return source.parent, out


@pytest.mark.parametrize("signum, status, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted"),
                                                  (signal.SIGKILL, -signal.SIGKILL, None)])
def test_a_signal_during_a_write(signum, status, word, rewrite, experiment, tmp_path):
    """SIGTERM / Ctrl-C: the write removes its own folder, says so in one line; SIGKILL: the next write removes it."""
    shards, out = rewrite
    before = snapshot(out)
    process = subprocess.Popen([sys.executable, "-c", WRITE, "merge", str(shards), "--out", str(out), "--overwrite"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env(), cwd=tmp_path)
    assert process.stdout.readline().strip() == b"KILL-POINT"
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")], "the write has its temporary folder"
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    process.stdout.close()
    err = err.decode()
    assert process.returncode == status and "Traceback" not in err
    assert snapshot(out) == before
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    if word is not None:
        assert err.strip().splitlines() == [f"{word}; nothing half-written was left behind"]
        assert leftovers == []
    else:
        assert leftovers, "SIGKILL runs no clean-up"
        save_experiment(experiment, out, overwrite=True)  # the next write into out removes it at once
        assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []


def test_sigterm_during_a_run_ends_it_quietly(tiny_dirs, rewrite, tmp_path):
    """SIGTERM while generating (no write open): one line, status 143, the previous result untouched."""
    _, out = rewrite
    process = start_slow_run(tmp_path, tiny_dirs["llama"], out, max_steps=40, extra="batch_size = 1\n")
    before = snapshot(tmp_path)
    seen = b""
    while b"prompt(s)" not in seen:
        line = process.stderr.readline()
        assert line, f"the run ended early: {seen[-2000:]!r}"
        seen += line
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read().decode()
    process.wait(timeout=120)
    process.stderr.close()
    assert process.returncode == 143 and "Traceback" not in rest
    assert rest.strip().splitlines()[-1] == "terminated; nothing half-written was left behind"
    assert snapshot(tmp_path) == before


def test_a_shard_leftover_is_not_mistaken_for_a_shard(experiment, tmp_path):
    """A killed shard write leaves .shard-i-of-n.tmp-*: merging skips it and the rerun of the shard removes it."""
    shards = tmp_path / "out"
    leftover = shards / f".shard-0-of-1.tmp-{dead_owner_tag()}-abcdefgh"
    leftover.mkdir(parents=True)
    _mark(leftover)
    shard = type(experiment)(**{**vars(experiment), "shard": "0/1", "path": None})
    save_experiment(shard, shards / "shard-0-of-1")
    assert not leftover.exists()
    assert load_experiment(shards).runs
