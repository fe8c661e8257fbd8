"""The manifest rules of `analyze`'s outputs, including a write interrupted between two renames."""

from __future__ import annotations

import os

import pytest

from tempo_lens.io import atomic
from tempo_lens.errors import ExperimentFileError
from tempo_lens.app.outputs import MANIFEST, OutputPlan

FILES = {"FINDINGS.md": "# report\n", "report.html": "<html></html>\n", "metrics.json": "{}\n"}


def test_own_files_are_replaced_and_foreign_ones_kept(tmp_path):
    OutputPlan(tmp_path).write_report(FILES)
    (tmp_path / "report" / "notes.md").write_text("mine")
    OutputPlan(tmp_path).check()  # unchanged since written: no refusal
    OutputPlan(tmp_path).write_report({**FILES, "FINDINGS.md": "# new\n"})
    assert (tmp_path / "report" / "FINDINGS.md").read_text() == "# new\n"
    assert (tmp_path / "report" / "notes.md").read_text() == "mine"


def test_files_it_did_not_write_are_refused_unless_overwrite(tmp_path):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "FINDINGS.md").write_text("someone else's")
    with pytest.raises(ExperimentFileError, match="--overwrite"):
        OutputPlan(tmp_path).check()
    OutputPlan(tmp_path, overwrite=True).check()


def test_a_report_path_that_is_not_a_folder_is_refused_even_with_overwrite(tmp_path):
    (tmp_path / "report").write_text("a file")
    with pytest.raises(ExperimentFileError, match="not a folder"):
        OutputPlan(tmp_path, overwrite=True).check()


def test_a_write_killed_between_renames_is_still_recognised(tmp_path, monkeypatch):
    OutputPlan(tmp_path).write_report(FILES)
    real = os.replace
    calls = []

    def failing(src, dst):
        calls.append(dst)
        if str(dst).endswith("report.html"):
            raise KeyboardInterrupt  # as if killed after FINDINGS.md was renamed into place
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing)
    with pytest.raises(KeyboardInterrupt):
        OutputPlan(tmp_path).write_report({name: text + "v2\n" for name, text in FILES.items()})
    monkeypatch.setattr(atomic.os, "replace", real)
    assert (tmp_path / "report" / "FINDINGS.md").read_text() == FILES["FINDINGS.md"] + "v2\n"
    OutputPlan(tmp_path).check()  # the half-new folder is still ours: no refusal
    assert not [p for p in (tmp_path / "report").iterdir() if ".tmp-" in p.name]
    assert (tmp_path / MANIFEST).is_file()
