"""Opt-in attention capture: the pattern of every step's forward pass, beside the layout.

A captured step is a float32 array ``[layers, batch, heads, queries, keys]``: the queries are the
step's new tokens (its siblings), the keys every physical position up to and including them.
Capture is selective (which layers, which steps); generation without it registers no pattern hooks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .errors import InvalidInputError, OutOfRangeError
from .layout import Mode, TokenLayout


@dataclass(frozen=True)
class CaptureSpec:
    """Which layers and steps to keep (None: all). Negative layers count from the last one."""

    layers: Sequence[int] | None = None
    steps: Sequence[int] | None = None

    def layers_for(self, n_layers: int) -> list[int]:
        """The model layer numbers captured, sorted (an empty list captures nothing)."""
        return resolve_layers(self.layers, n_layers, "capture layers")

    def wants_step(self, step: int) -> bool:
        return self.steps is None or step in self.steps

    def to_dict(self) -> dict:
        return {
            "layers": None if self.layers is None else list(self.layers),
            "steps": None if self.steps is None else list(self.steps),
        }


def resolve_layer(layer: int, n_layers: int, what: str = "layer") -> int:
    """One layer number of a model with ``n_layers`` (negative counts from the last), or a clear error."""
    return resolve_layers([layer], n_layers, what)[0]


def resolve_layers(layers: Sequence[int] | None, n_layers: int, what: str = "layers") -> list[int]:
    """Layer numbers of a model with ``n_layers`` (None: all; negative counts from the last), sorted, or a clear error.

    The one rule for layer indices (capture, replay, pruning and the sibling tools all use it).
    """
    if layers is None:
        return list(range(n_layers))
    if (
        isinstance(layers, (str, bytes))
        or not isinstance(layers, Iterable)
        or not all(isinstance(l, (int, np.integer)) and not isinstance(l, bool) for l in layers)
    ):
        raise InvalidInputError(f"{what} must be a list of layer numbers, got {layers!r}")
    bad = [int(l) for l in layers if not -n_layers <= l < n_layers]
    if bad:
        raise InvalidInputError(
            f'{what} {bad} outside 0..{n_layers - 1} (or -{n_layers}..-1); choose layers of this model or "all"'
        )
    return sorted(set(int(l) % n_layers for l in layers))


class StepAttention:
    """One step's captured attention ``[layer, batch, head_index, query_pos, key_pos]`` that knows its layer numbers.

    ``step_attention[L]`` is model layer ``L``'s pattern ``[batch, head_index, query_pos, key_pos]``
    (whatever subset of layers was captured); ``np.asarray(step_attention)`` and ``.shape`` give the
    stacked array.
    """

    def __init__(self, array: np.ndarray, layers: Sequence[int]):
        self.array, self.layers = array, list(layers)

    def __getitem__(self, layer: int) -> np.ndarray:
        if layer not in self.layers:
            raise KeyError(f"layer {layer} was not captured; captured layers: {self.layers}")
        return self.array[self.layers.index(layer)]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.array if dtype is None else self.array.astype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    def __repr__(self) -> str:
        return f"StepAttention(layers={self.layers}, shape={self.shape})"


@dataclass
class CapturedAttention:
    """Per-step attention ``[layer, batch, head_index, query_pos, key_pos]`` for the captured layers.

    A mapping from step to :class:`StepAttention`: ``capture[step][layer]``, ``list(capture)`` (the
    steps), ``len(capture)``.
    """

    layers: list[int]
    steps: dict[int, np.ndarray] = field(default_factory=dict)

    def record(self, step: int, patterns: dict[int, Tensor]) -> None:
        if not self.layers:
            return
        stacked: Float[Tensor, "layer batch head_index query_pos key_pos"] = torch.stack([patterns[l] for l in self.layers])
        self.steps[step] = stacked.detach().to("cpu", torch.float32).numpy()

    def __getitem__(self, step: int) -> StepAttention:
        if step not in self.steps:
            raise KeyError(f"step {step} was not captured; captured steps: {self.step_ids}")
        return StepAttention(self.steps[step], self.layers)

    def __contains__(self, step: object) -> bool:
        return step in self.steps

    def __iter__(self):
        return iter(self.step_ids)

    def __len__(self) -> int:
        return len(self.steps)

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
    attention: Mapping[int, np.ndarray]
    meta: dict = field(default_factory=dict)

    @property
    def step_ids(self) -> list[int]:
        """The captured generation steps, in order."""
        return sorted(s for s in self.attention if s >= 0)

    @property
    def mask(self) -> Mode:
        """The mask the attention was computed under: the generation's ``mode``, or a control replay's own mask."""
        return cast(Mode, str(self.meta.get("mask") or self.mode))

    @property
    def positions(self) -> str:
        """The positions the attention was computed at: ``"shared"`` (TEMPO), or ``"unique"`` (a control replay)."""
        return str(
            self.meta.get("positions")
            or ("unique" if self.is_control and self.meta.get("variant") == "unique_positions" else "shared")
        )

    @property
    def is_control(self) -> bool:
        """A control replay of a generated run (``meta["variant"]`` other than ``"generated"``)."""
        return self.meta.get("variant", "generated") != "generated"

    def step_array(self, step: int) -> np.ndarray:
        """The captured attention of ``step``, or a clear error naming the captured steps."""
        if step not in self.attention:
            raise OutOfRangeError(f"step {step!r} was not captured in run {self.name!r} (captured steps: {self.step_ids})")
        return self.attention[step]

    @classmethod
    def from_result(cls, result, name: str = "run", **meta) -> CapturedRun:
        if not (hasattr(result, "capture") and hasattr(result, "layout") and hasattr(result, "to_json_dict")):
            raise InvalidInputError(
                f"CapturedRun.from_result needs a GenerationResult (from generate), got {type(result).__name__}"
            )
        if result.capture is None:
            raise InvalidInputError("this generation captured no attention; pass capture=True to generate()")
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


def as_run(source: Any, name: str | None = None) -> CapturedRun:
    """A :class:`CapturedRun` from a saved run or a generated result (with capture), so analysis takes either."""
    if isinstance(source, CapturedRun):
        return source
    if hasattr(source, "layout") and hasattr(source, "capture") and hasattr(source, "to_json_dict"):
        return CapturedRun.from_result(source, name=name or f"{source.mode}-0")
    raise InvalidInputError(
        f"expected a captured run or a generation result, got {type(source).__name__}; "
        "pass generate(..., capture=True)'s result, a run of load_experiment(...).runs, or a list of them"
    )


def as_runs(source: Any, *, controls: bool = False) -> list[CapturedRun]:
    """Runs from one run or result, an experiment (its ``runs``), or an iterable of runs and results.

    An experiment gives its generated runs; ``controls=True`` adds its control replays (each knows the
    ``mask`` and ``positions`` that produced it). Runs passed one by one are taken as given.
    """
    if isinstance(source, CapturedRun) or hasattr(source, "to_json_dict"):
        return [as_run(source)]
    if hasattr(source, "runs") and not isinstance(source, (list, tuple)):
        source = [r for r in source.runs if controls or not getattr(r, "is_control", False)]
    if isinstance(source, Iterable) and not isinstance(source, (str, bytes, np.ndarray)):
        return distinct_runs(
            [
                as_run(item, name=None if isinstance(item, CapturedRun) else f"{getattr(item, 'mode', 'run')}-{i}")
                for i, item in enumerate(source)
            ]
        )
    return [as_run(source)]


def distinct_runs(runs: list[CapturedRun]) -> list[CapturedRun]:
    """``runs``, refusing two of one name: analyses group by run name, and two runs of one name would pool as one."""
    seen: set[str] = set()
    for run in runs:
        if run.name in seen:
            raise InvalidInputError(
                f"two runs are named {run.name!r}; analyses group by run name, so each run needs its own "
                "(rename one: dataclasses.replace(run, name=...))"
            )
        seen.add(run.name)
    return runs
