"""Issue 32, class 7: no silence where a person waits: a lock held by another process is named with the wait; an
output that cannot be written is refused before the generation; a damaged run folder analyze wrote is regenerated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tempo_lens.io.atomic import folder_lock
from tests.reliability.conftest import assert_clean_refusal, run_cli, subprocess_env
from tests.reliability.test_input_bounds import _analyze_folder, generated  # noqa: F401  (a fixture)

HOLD = r"""
import sys, time
from pathlib import Path
from tempo_lens.io.atomic import folder_lock
with folder_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_writer_waiting_on_another_process_says_who_and_how_long(tmp_path, capsys):
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "1.5"], stdout=subprocess.PIPE, text=True,
                             env=subprocess_env())
    try:
        assert child.stdout.readline().strip() == "held"
        with folder_lock(tmp_path, wait_s=30):
            pass
    finally:
        child.wait(timeout=30)
    err = capsys.readouterr().err
    assert f"waiting for process {child.pid}" in err and str(tmp_path) in err and "up to 30 s" in err


def test_a_free_lock_is_taken_without_a_word(tmp_path, capsys):
    with folder_lock(tmp_path, wait_s=30):
        pass
    assert capsys.readouterr().err == ""


@pytest.fixture
def unwritable(tmp_path):
    """A folder this process cannot create files in (read-only mode; as root, which ignores modes, immutable)."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    os.chmod(folder, 0o555)
    immutable = False
    if os.access(folder, os.W_OK):
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("no way to make a folder unwritable for this user here")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=False)
        os.chmod(folder, 0o755)


@pytest.mark.parametrize("out", ["exp", "deeper/and/deeper"])
def test_run_into_a_folder_that_cannot_be_written_is_refused_before_the_model_loads(tiny_dirs, tmp_path, unwritable, out,
                                                                                     no_model_load):
    config = tmp_path / "c.toml"
    config.write_text(f'prompt = "t1 t5"\nmodel = "{tiny_dirs["llama"]}"\nmax_steps = 1\n')
    rc, _, err = run_cli(["run", str(config), "--out", str(unwritable / out)])
    assert_clean_refusal(rc, err, str(unwritable), "not writable")


def test_analyze_into_a_folder_that_cannot_be_written_is_refused_before_the_model_loads(tiny_dirs, tmp_path, unwritable,
                                                                                         no_model_load):
    folder = _analyze_folder(tmp_path / "analyses", tiny_dirs["llama"])
    rc, _, err = run_cli(["analyze", str(folder), "--out", str(unwritable)])
    assert_clean_refusal(rc, err, str(unwritable), "not writable")


DAMAGED_METADATA = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]),
    "deleted": lambda path: path.unlink(),
    "not_json": lambda path: path.write_text("{ not json"),
    "empty": lambda path: path.write_bytes(b""),
}


@pytest.mark.parametrize("damage", list(DAMAGED_METADATA))
def test_a_run_folder_analyze_wrote_with_damaged_metadata_is_regenerated(tiny_dirs, tmp_path, generated, damage):  # noqa: F811
    folder = _analyze_folder(tmp_path / "analyses", tiny_dirs["llama"])
    assert run_cli(["analyze", str(folder)])[0] == 0
    DAMAGED_METADATA[damage](folder / "runs" / "a_pair" / "metadata.json")
    generated.clear()
    rc, _, err = run_cli(["analyze", str(folder)])
    assert rc == 0, err
    assert generated.prompts() == ["t1 t17 t42 t5"] * 2, "only the damaged folder is generated again"
    assert json.loads((folder / "runs" / "a_pair" / "metadata.json").read_text())["runs"]


def test_a_damaged_folder_analyze_did_not_write_is_still_refused(tiny_dirs, tmp_path, generated):  # noqa: F811
    folder = _analyze_folder(tmp_path / "analyses", tiny_dirs["llama"])
    foreign = folder / "runs" / "a_pair"
    foreign.mkdir(parents=True)
    (foreign / "metadata.json").write_text("{ truncated")
    rc, _, err = run_cli(["analyze", str(folder)])
    assert_clean_refusal(rc, err, str(foreign), "not written by")
    assert (foreign / "metadata.json").read_text() == "{ truncated"


def test_the_lock_refusal_after_the_wait_names_the_holder(tmp_path):
    from tempo_lens.errors import ExperimentFileError

    child = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "5"], stdout=subprocess.PIPE, text=True,
                             env=subprocess_env())
    try:
        assert child.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(ExperimentFileError, match=rf"process {child.pid} .*within 0.5 s"):
            with folder_lock(tmp_path, wait_s=0.5):
                pass
        assert time.monotonic() - started < 5
    finally:
        child.kill()
        child.wait()
