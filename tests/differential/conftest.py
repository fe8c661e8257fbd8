"""The harness's shared shelf of tiny models, the ``fuzz`` marker, and the end-of-session printout."""

from __future__ import annotations

import os

import pytest

from .known import KNOWN_BUGS, tally
from .models import ModelShelf


def pytest_configure(config):
    from transformers.utils import logging

    logging.disable_progress_bar()  # a tiny model loads per (family, backend, dtype, speed paths): no bar each time


@pytest.fixture(scope="session")
def shelf(tmp_path_factory) -> ModelShelf:
    """Tiny models of every family, built on first use; the backends that load here are found once."""
    shelf = ModelShelf(tmp_path_factory.mktemp("differential"))
    if not shelf.find_backends():
        pytest.skip(f"no backend loads here: {shelf.unavailable}")
    _shelves.append(shelf)
    return shelf


_shelves: list[ModelShelf] = []


def pytest_terminal_summary(terminalreporter):
    if not _shelves and not tally:
        return
    write = terminalreporter.write_line
    terminalreporter.section("differential harness")
    for shelf in _shelves:
        write(f"backends drawn: {', '.join(shelf.backends)}")
        for name, why in shelf.unavailable.items():
            write(f"backend not available here, not drawn: {name} ({why})")
    if os.environ.get("TEMPO_FUZZ_STRICT", "") not in ("", "0"):
        write("TEMPO_FUZZ_STRICT is set: no known bug was excused")
        return
    for bug in KNOWN_BUGS:
        excused, passed = tally[(bug.item, "failed as known")], tally[(bug.item, "passed")]
        write(
            f"known, excused: {bug.item}: {excused} cases failed as known, {passed} in its region passed "
            f"(checks excused: {', '.join(sorted(bug.checks))})"
        )
