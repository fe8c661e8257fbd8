"""A progress bar for long generations (tqdm, on stderr): shown when asked, or for long runs at a terminal.

``progress=None`` (the default) shows it only when the run may take ``LONG_STEPS`` forwards or more and
stderr is a terminal, so tests, pipes and notebooks of short runs stay quiet; True / False force it.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

LONG_STEPS = 50


def step_bar(total: int, progress: bool | None, desc: str = "TEMPO steps") -> tqdm:
    """A bar of ``total`` forward steps (disabled unless asked for, or long at a terminal)."""
    shown = progress if progress is not None else total >= LONG_STEPS and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="step", disable=not shown, leave=False, file=sys.stderr)
