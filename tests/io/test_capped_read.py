"""Capped file reads: a regular file within the limit is read whole; anything else is refused with its reason."""

from __future__ import annotations

import os

import pytest

from tempo_lens.io.capped_read import CappedReadError, read_capped
from tempo_lens.errors import ExperimentFileError
from tempo_lens.io.records import read_bounded


def test_a_file_within_the_limit_is_read_whole(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b"0123456789")
    assert read_capped(path, 10) == b"0123456789"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: None, "open"),
        (lambda p: p.mkdir(), "folder"),
        (lambda p: os.mkfifo(p), "special"),
        (lambda p: p.write_bytes(b"x" * 11), "too_large"),
    ],
    ids=["missing", "folder", "fifo", "too_large"],
)
def test_other_files_are_refused_before_reading(tmp_path, make, reason):
    path = tmp_path / "target"
    make(path)
    with pytest.raises(CappedReadError) as refused:
        read_capped(path, 10)
    assert refused.value.reason == reason
    if reason == "open":
        assert isinstance(refused.value.error, FileNotFoundError) and refused.value.cause
    if reason == "too_large":
        assert refused.value.size == 11


def test_a_record_reader_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(ExperimentFileError, match=r"is not a regular file; re-run it"):
        read_bounded(tmp_path, "metadata.json", "re-run it", 10)
