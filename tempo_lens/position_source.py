"""Where position hooks read the positions of a forward's tokens: a layout, a tensor, or a callable.

Position hooks take a forward to cover the *last* ``q`` tokens of the sequence the source describes
(``[n_tokens]``, or ``[batch, n_tokens]`` for one row of positions per batch row), so the same hooks
serve a full forward and a cached step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from .errors import InvalidInputError
from .layout import TokenLayout

PositionSource = TokenLayout | Tensor | Callable[[], Tensor]


def positions_of(source: PositionSource) -> tuple[Callable[[], Tensor], tuple]:
    """(a function giving the positions of every physical token, memo key) for a layout, tensor or callable.

    For a layout the key comes from its version alone, so a memo hit builds no tensor. A tensor (edited
    in place or not) and a callable's result are keyed by their values, so a memo never outlives them.
    """
    if isinstance(source, TokenLayout):
        return (lambda: source.positions("shared")), ("layout", id(source), source.version)
    positions = source if isinstance(source, Tensor) else source()
    if not isinstance(positions, Tensor):
        raise InvalidInputError(
            f"positions must be a TokenLayout, a tensor or a callable returning one, got {type(positions).__name__}"
        )
    values = positions.detach().to("cpu", torch.float64).numpy().tobytes()
    return (lambda: positions), ("values", tuple(positions.shape), values)


def last_positions(all_positions: Float[Tensor, "... pos"], n: int) -> Float[Tensor, "... query_pos"]:
    """The positions of the forward's last ``n`` tokens, refused when the source describes fewer."""
    if n > all_positions.shape[-1]:
        raise InvalidInputError(f"the forward has {n} tokens but only {all_positions.shape[-1]} positions were given")
    return all_positions[..., all_positions.shape[-1] - n :]


def integer_positions(wanted: Tensor) -> Tensor:
    """``wanted`` as integer indices into a learned or precomputed table; fractional positions are refused."""
    if not torch.equal(wanted, wanted.round()):
        raise InvalidInputError("learned position embeddings need integer positions; fractional positions need a RoPE model")
    return wanted.long()
