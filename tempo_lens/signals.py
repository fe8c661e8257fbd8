"""SIGTERM as an exception, so ``finally`` blocks run: a terminated write removes its temporary folder.

Python's default SIGTERM action ends the process at once, skipping every ``finally``; Slurm, systemd
and ``kill`` send SIGTERM first. :class:`Terminated` derives from ``KeyboardInterrupt`` so that every
clean-up written for Ctrl-C (and nothing that catches ``Exception``) also runs for SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM; raised in the main thread by :func:`terminate_raises`."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(f"signal {signum}")


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` (only where the default action would kill).

    Outside the main thread, or when someone else installed a SIGTERM handler, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
