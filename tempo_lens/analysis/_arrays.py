"""Shared input handling for the analysis modules: array conversion and step-shape checks.

Every metric takes one captured step ``A[layer, batch, head, query, key]`` (numpy or torch) and the
run's :class:`~tempo_lens.layout.TokenLayout`; the checks here make a mismatch between the two fail
loudly instead of silently measuring the wrong keys.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from ..errors import InvalidInputError
from ..layout import TokenLayout

AttentionStep = Float[np.ndarray, "layer batch head_index query_pos key_pos"]


def as_numpy(x: Any) -> np.ndarray:
    """A float numpy array from a numpy array, torch tensor or nested list (torch is moved to CPU first).

    float32 / float64 arrays are used as they are (no copy: captures are float32 and ``log`` on
    float32 is several times faster); anything else becomes float64.
    """
    if hasattr(x, "detach"):
        x = x.detach().to("cpu")
        x = (x if x.dtype in (torch.float32, torch.float64) else x.float()).numpy()
    try:
        x = np.asarray(x)
        return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"expected numbers (an attention array), got {type(x).__name__}") from None


def as_attention(attention: Any) -> AttentionStep:
    """Convert and check that one captured step has five axes ``[layer, batch, head, query, key]``."""
    a = as_numpy(attention)
    if a.ndim != 5:
        raise InvalidInputError(f"a captured step is [layer, batch, head, query, key]; got shape {a.shape}")
    return a


def step_attention(attention: Any, layout: TokenLayout, step: int) -> tuple[AttentionStep, range]:
    """The checked array and the step's physical range; the array must be that step's forward pass.

    Queries are the step's siblings and keys every physical position up to its last sibling, as
    :mod:`tempo_lens.capture` records them.
    """
    a = as_attention(attention)
    if not isinstance(layout, TokenLayout):
        raise InvalidInputError(f"expected the run's TokenLayout (run.layout), got {type(layout).__name__}")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise InvalidInputError(f"step must be a step number, got {step!r}")
    siblings = layout.step_range(step)
    n_queries, n_keys = a.shape[-2:]
    if n_queries != len(siblings) or n_keys != siblings.stop:
        raise InvalidInputError(
            f"step {step} has {len(siblings)} sibling(s) at physical {siblings.start}..{siblings.stop - 1}, so its "
            f"attention should be [.., {len(siblings)}, {siblings.stop}]; got {a.shape}. Is this the right layout?"
        )
    return a, siblings


def layer_labels(attention: Any, n_captured: int) -> list[int]:
    """The model layer numbers of a captured step: its own (``StepAttention.layers``), else ``0..L-1``."""
    layers = getattr(attention, "layers", None)
    return list(layers) if layers is not None else list(range(n_captured))
