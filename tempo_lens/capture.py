"""Opt-in attention capture: the pattern of every step's forward pass, beside the layout.

A captured step is a float32 array ``[layers, batch, heads, queries, keys]``: the queries are the
step's new tokens (its siblings), the keys every physical position up to and including them.
Capture is selective (which layers, which steps); generation without it registers no pattern hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .errors import InvalidInputError
from .layout import TokenLayout


@dataclass
class CaptureSpec:
    """Which layers and steps to keep (None: all)."""

    layers: Sequence[int] | None = None
    steps: Sequence[int] | None = None

    def layers_for(self, n_layers: int) -> list[int]:
        chosen = list(range(n_layers)) if self.layers is None else sorted(set(int(l) for l in self.layers))
        bad = [l for l in chosen if not 0 <= l < n_layers]
        if bad:
            raise InvalidInputError(f"capture layers {bad} outside 0..{n_layers - 1}; choose layers of this model or \"all\"")
        return chosen

    def wants_step(self, step: int) -> bool:
        return self.steps is None or step in self.steps


@dataclass
class CapturedAttention:
    """Per-step attention arrays ``[layers, batch, heads, queries, keys]`` for the captured layers."""

    layers: list[int]
    steps: dict[int, np.ndarray] = field(default_factory=dict)

    def record(self, step: int, patterns: dict[int, Tensor]) -> None:
        stacked: Float[Tensor, "layer batch head q key"] = torch.stack([patterns[l] for l in self.layers])
        self.steps[step] = stacked.detach().to("cpu", torch.float32).numpy()

    def __getitem__(self, step: int) -> np.ndarray:
        return self.steps[step]

    def __contains__(self, step: object) -> bool:
        return step in self.steps

    @property
    def step_ids(self) -> list[int]:
        return sorted(self.steps)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.steps.values())


@dataclass
class CapturedRun:
    """One generation as the analysis sees it: layout, token texts and per-step attention, no model needed.

    ``attention[step]`` is ``[layers, batch, heads, queries, keys]`` for the layers in ``layers``
    (model layer indices); ``meta`` holds the run's settings (mode, threshold, model, ...).
    """

    name: str
    prompt: str
    mode: str
    layout: TokenLayout
    token_strings: list[str]
    layers: list[int]
    attention: dict[int, np.ndarray]
    meta: dict = field(default_factory=dict)

    @property
    def step_ids(self) -> list[int]:
        """The captured generation steps, in order."""
        return sorted(s for s in self.attention if s >= 0)

    @classmethod
    def from_result(cls, result, name: str = "run", **meta) -> "CapturedRun":
        if result.capture is None:
            raise ValueError("this generation captured no attention; pass capture=True to generate()")
        info = result.to_json_dict()
        info.pop("steps", None)
        info.update(meta)
        info.setdefault("n_layers", result.n_layers)
        info.setdefault("n_heads", result.n_heads)
        return cls(
            name=name,
            prompt=result.prompt_text if result.prompt is None else result.prompt,
            mode=result.mode,
            layout=result.layout,
            token_strings=list(result.token_strings),
            layers=list(result.capture.layers),
            attention=dict(result.capture.steps),
            meta=info,
        )
