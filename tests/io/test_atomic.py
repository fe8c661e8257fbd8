"""Atomic folder writes: all or nothing, the old folder kept until the new one is in place."""

from __future__ import annotations

import os

import pytest

from tempo_lens.io.atomic import atomic_directory, backups


def test_success_replaces_and_failure_keeps_the_old_folder(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("two")
            raise RuntimeError("killed mid-write")
    assert (target / "a.txt").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_final_rename_restores_the_previous_folder(tmp_path, monkeypatch):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("one")
    real_replace = os.replace

    def failing(src, dst):
        if str(dst) == str(target) and ".tmp-" in str(src):
            raise OSError("rename failed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("two")
    monkeypatch.undo()
    assert (target / "a.txt").read_text() == "one" and backups(target) == []
