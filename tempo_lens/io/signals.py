"""Ctrl-C and SIGTERM: a quiet exit where nothing is half-written, clean-up where something is.

The command line (:func:`exit_quietly_on_signals`) turns SIGINT and SIGTERM into one line and an
immediate exit: an interrupt inside a library's import can leave that library half-imported and
surface later as an unrelated traceback, and outside a write there is nothing to clean up. Inside a
write (:func:`interrupts_raise`, entered by :func:`tempo_lens.io.atomic.atomic_directory`) they raise
instead, so the ``finally`` blocks remove the temporary folder: SIGINT as ``KeyboardInterrupt``,
SIGTERM as :class:`Terminated` (a ``KeyboardInterrupt``, so every clean-up written for Ctrl-C runs).
A handler someone else installed is left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

TYPE_CHECKING = False  # typing is not imported: this module loads first, before Ctrl-C is handled
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

EXIT_STATUS: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM inside :func:`interrupts_raise`."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(f"signal {signum}")


def _exit_quietly(signum: int, frame: object) -> None:
    what = "interrupted" if signum == signal.SIGINT else "terminated"
    try:
        os.write(2, f"{what}; nothing half-written was left behind\n".encode())
    finally:
        os._exit(EXIT_STATUS.get(signum, 128 + signum))


def exit_quietly_on_signals() -> None:
    """From now on, SIGINT and SIGTERM end the process at once with one line (exit status 130 / 143)."""
    for signum in EXIT_STATUS:
        _set(signum, _exit_quietly)


def _set(signum: int, handler: Any) -> bool:
    """Install ``handler``; False outside the main thread, where Python allows no signal handlers."""
    try:
        signal.signal(signum, handler)
    except ValueError:
        return False
    return True


def is_command_line() -> bool:
    """Whether this process is the ``tempo-lens`` command (the installed script or ``python -m tempo_lens.cli``)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name in ("tempo-lens", "tempo-lens.exe") or (name == "cli.py" and "tempo_lens" in sys.argv[0])


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` and SIGINT ``KeyboardInterrupt``.

    Only handlers that would otherwise end the process (SIGTERM's default, the quiet exit) are replaced,
    only in the main thread, and the previous ones are restored afterwards.
    """
    wanted: dict[int, Any] = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: _raise_terminated}
    previous: dict[int, Any] = {}
    for signum, handler in wanted.items():
        current = signal.getsignal(signum)
        if (current is _exit_quietly or (signum == signal.SIGTERM and current == signal.SIG_DFL)) and _set(signum, handler):
            previous[signum] = current
    try:
        yield
    finally:
        for signum, handler in previous.items():
            _set(signum, handler)
