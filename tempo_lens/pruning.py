"""Retroactive pruning: collapse earlier parallel sets that the newest tokens barely attend to.

After each step's forward pass, every earlier parallel set (never the newest) is scored by the
attention the newest queries pay to it, relative to an average earlier token; a set scoring below
``attention_threshold`` is collapsed to its most likely sibling. The pruned siblings are marked in the
:class:`~tempo_lens.layout.TokenLayout`, and the mask hook (:func:`tempo_lens.hooks.tempo_hooks`) then
hides their keys from every later query.

Scoring (``a[k]`` = attention to physical key ``k``):

- average over the layers used with weights ``linspace(0.2, 1.0, L)`` normalised (configurable),
  then over batch, heads and the newest query rows;
- optional distance prior ``prior[k] = exp(-d_k / (n / 2))`` (``d_k`` logical distance from the newest
  step, ``n`` the number of earlier keys), normalised to mean 1; ``a[k] /= prior[k]``;
- relative score of a set = mean of ``a`` over its siblings / mean of ``a`` over all earlier keys except
  position 0 (the attention sink) and keys already pruned. 1.0 means "as much as an average token".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, get_args

import torch
from jaxtyping import Float
from torch import Tensor

from .capture import resolve_layer
from .errors import InvalidInputError
from .layout import TokenLayout
from .validation import check_choice, reject_unknown

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

Hook = tuple[str, Callable[..., Tensor]]


class PruningStrategy(Protocol):
    """What the generator needs from a pruning strategy: settings that start one session per generation."""

    def start(self, model: TransformerBridge, layout: TokenLayout, row: int = 0) -> PruningSession: ...

    def describe(self) -> dict: ...


class PruningSession(Protocol):
    """The state of one generation's pruning: the evidence it records and the events it made."""

    layers: list[int]  # layers whose attention pattern ``after_step`` needs (recorded by the generator)
    events: list[PruneEvent]

    @property
    def hooks(self) -> list[Hook]:
        """Extra hooks the session reads its own evidence from."""
        ...

    def after_step(self, patterns: dict[int, Tensor], step: int) -> list[PruneEvent]: ...


@dataclass(frozen=True)
class PruneEvent:
    """A set collapsed after ``at_step``'s forward: ``kept`` survives, ``pruned`` leave the context."""

    set_step: int
    at_step: int
    score: float
    kept: int
    pruned: tuple[int, ...]


def default_layer_weights(n_layers_used: int) -> Float[Tensor, " layer"]:
    """``linspace(0.2, 1.0, L)`` normalised to sum 1 (later layers count more)."""
    weights = torch.linspace(0.2, 1.0, n_layers_used) if n_layers_used > 1 else torch.ones(1)
    return weights / weights.sum()


def key_attention(
    attention: Float[Tensor, "layer batch head_index query_pos key_pos"], layer_weights: Float[Tensor, " layer"]
) -> Float[Tensor, " key"]:
    """Attention per key: layer-weighted mean, then mean over batch, heads and queries."""
    per_layer = attention.float().mean(dim=(1, 2, 3))
    return (layer_weights.to(per_layer)[:, None] * per_layer).sum(0)


def distance_prior(layout: TokenLayout, step: int) -> Float[Tensor, " earlier_key"]:
    """``exp(-d / (n / 2))`` over the keys before ``step``, normalised to mean 1."""
    n = layout.step_range(step).start
    newest = layout.logical_positions[n]
    distance = torch.tensor([newest - p for p in layout.logical_positions[:n]], dtype=torch.float32)
    prior = torch.exp(-distance / (n / 2))
    return prior / prior.mean()


def set_scores(a: Float[Tensor, " key"], layout: TokenLayout, step: int) -> dict[int, float]:
    """Relative score of every earlier, not yet collapsed parallel set, given per-key attention ``a``.

    Denominator: mean of ``a`` over earlier keys except position 0 and keys already pruned.
    """
    start = layout.step_range(step).start
    reference = [k for k in range(1, start) if not layout.is_pruned(k)]
    if not reference:
        return {}
    denominator = float(a[reference].mean())
    scores: dict[int, float] = {}
    for earlier in layout.parallel_steps():
        if earlier >= step:
            break
        members = list(layout.step_range(earlier))
        if any(layout.is_pruned(k) for k in members):
            continue  # a set is pruned at most once
        scores[earlier] = float(a[members].mean()) / denominator if denominator > 0 else float("inf")
    return scores


class TabledStrategy:
    """Strategy settings that a ``[pruning]`` config table names: ``TABLE`` maps each table key to its attribute."""

    TABLE: ClassVar[dict[str, str]]

    def describe(self) -> dict:
        return describe_strategy(self)


@dataclass(frozen=True)
class AttentionPruning(TabledStrategy):
    """Prune by attention: configurable threshold, layers used, their weights, and the distance prior.

    Settings only; :meth:`start` makes the per-generation state (its events), so one strategy object
    serves any number of generations.
    """

    attention_threshold: float = 0.5
    layers: Sequence[int] | None = None
    layer_weights: Sequence[float] | None = None
    use_distance_prior: bool = False

    TABLE: ClassVar[dict[str, str]] = {
        "attention_threshold": "attention_threshold",
        "layers": "layers",
        "layer_weights": "layer_weights",
        "distance_prior": "use_distance_prior",
    }

    def __post_init__(self) -> None:
        if not isinstance(self.use_distance_prior, bool):
            raise InvalidInputError(f"pruning.distance_prior must be true or false, got {self.use_distance_prior!r}")
        t = self.attention_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or t != t or t < 0 or t == float("inf"):
            raise InvalidInputError(f"prune threshold must be a finite number >= 0 (0 never prunes), got {t!r}")
        if self.layers is not None and (
            isinstance(self.layers, (str, bytes)) or not all(isinstance(l, int) and not isinstance(l, bool) for l in self.layers)
        ):
            raise InvalidInputError(f"pruning layers must be a list of layer indices, got {self.layers!r}")
        if self.layers is not None and not len(self.layers):
            raise InvalidInputError(
                "pruning layers is empty; list the layers whose attention scores sets, or leave it out for all"
            )
        if self.layer_weights is not None:
            w = self.layer_weights
            if isinstance(w, (str, bytes)) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in w):
                raise InvalidInputError(f"pruning layer_weights must be a list of numbers, got {w!r}")
            if any(x != x or x < 0 or x == float("inf") for x in w) or not sum(w) > 0:
                raise InvalidInputError(f"pruning layer_weights must be finite, >= 0 and with a positive sum, got {list(w)!r}")
        if self.layer_weights is not None and self.layers is not None and len(self.layer_weights) != len(self.layers):
            raise InvalidInputError("layer_weights needs one weight per layer in layers")

    def layers_for(self, n_layers: int) -> list[int]:
        """The model layers used (negative indices count from the last layer)."""
        layers = (
            list(range(n_layers))
            if self.layers is None
            else [resolve_layer(int(l), n_layers, "pruning layer") for l in self.layers]
        )
        if self.layer_weights is not None and len(self.layer_weights) != len(layers):
            raise InvalidInputError(
                f"pruning layer_weights has {len(self.layer_weights)} weights for {len(layers)} layers; "
                "give one weight per layer used (or set layers)"
            )
        return layers

    def weights_for(self, n_layers_used: int) -> Float[Tensor, " layer"]:
        if self.layer_weights is None:
            return default_layer_weights(n_layers_used)
        weights = torch.tensor(list(self.layer_weights), dtype=torch.float32)
        return weights / weights.sum()

    def score(
        self, layout: TokenLayout, attention: Float[Tensor, "layer batch head_index query_pos key_pos"], step: int
    ) -> dict[int, float]:
        """Scores of the earlier sets from one step's attention (layers in ``layers_for`` order)."""
        a = key_attention(attention, self.weights_for(attention.shape[0]))
        start = layout.step_range(step).start
        if self.use_distance_prior and start > 0:
            a = a.clone()
            a[:start] = a[:start] / distance_prior(layout, step).to(a)
        return set_scores(a, layout, step)

    def start(self, model: TransformerBridge, layout: TokenLayout, row: int = 0) -> AttentionPruningSession:
        return AttentionPruningSession(self, layout, self.layers_for(int(model.cfg.n_layers)))


@dataclass
class AttentionPruningSession:
    """One generation under :class:`AttentionPruning`; ``after_step`` gets this generation's own patterns."""

    strategy: AttentionPruning
    layout: TokenLayout
    layers: list[int]
    events: list[PruneEvent] = field(default_factory=list)

    @property
    def hooks(self) -> list[Hook]:
        return []  # the attention patterns come from the generator's recorder (see ``layers``)

    def after_step(self, patterns: dict[int, Tensor], step: int) -> list[PruneEvent]:
        if self.strategy.attention_threshold == 0 or not patterns:
            return []
        attention = torch.stack([patterns[l] for l in self.layers])  # this row's patterns, [1, head, q, K]
        new_events = []
        for set_step, score in self.strategy.score(self.layout, attention, step).items():
            if score < self.strategy.attention_threshold:
                members = list(self.layout.step_range(set_step))
                kept, pruned = members[0], tuple(members[1:])
                self.layout.prune(pruned, at_step=step, score=score)
                new_events.append(PruneEvent(set_step, step, score, kept, pruned))
        self.events.extend(new_events)
        return new_events


@dataclass(frozen=True)
class SimilarityPruning(TabledStrategy):
    """Prune for diversity: drop siblings whose hidden state nearly duplicates their set's most likely one.

    The residual stream after block ``layer`` (``blocks.L.hook_resid_post``, ``[batch, pos, d_model]``;
    default the last block) is recorded for every token as it is fed. Each parallel set is judged once,
    after the following step's forward (never while it is the newest set): a sibling whose cosine
    similarity to the set's most likely sibling is at least ``similarity_threshold`` is pruned, and the
    mask hook hides it from every later query, as with :class:`AttentionPruning`. A threshold above 1
    never prunes; -1 keeps only the most likely sibling of every set.
    """

    similarity_threshold: float = 0.95
    layer: int = -1

    TABLE: ClassVar[dict[str, str]] = {"similarity_threshold": "similarity_threshold", "layer": "layer"}

    def __post_init__(self) -> None:
        t = self.similarity_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or t != t or t in (float("inf"), float("-inf")):
            raise InvalidInputError(
                f"similarity threshold must be a finite number (cosine similarity, -1..1; above 1 never prunes), got {t!r}"
            )
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise InvalidInputError(f"similarity pruning layer must be an integer, got {self.layer!r}")

    def start(self, model: TransformerBridge, layout: TokenLayout, row: int = 0) -> SimilarityPruningSession:
        layer = resolve_layer(self.layer, int(model.cfg.n_layers), "similarity pruning layer")
        return SimilarityPruningSession(self, layout, layer, row)


@dataclass
class SimilarityPruningSession:
    """One generation under :class:`SimilarityPruning`: the hidden state of every token fed so far."""

    strategy: SimilarityPruning
    layout: TokenLayout
    layer: int
    row: int = 0
    events: list[PruneEvent] = field(default_factory=list)
    states: dict[int, Tensor] = field(default_factory=dict, repr=False)
    layers: list[int] = field(default_factory=list)

    @property
    def hooks(self) -> list[Hook]:
        def record(resid: Float[Tensor, "batch pos d_model"], hook: Any = None) -> Tensor:
            n_new = len(self.layout) - len(self.states)  # the tokens this forward fed (right-aligned)
            rows = resid[self.row, resid.shape[1] - n_new :].detach().float().cpu()  # one copy per forward
            self.states.update(zip(range(len(self.layout) - n_new, len(self.layout)), rows))
            return resid

        return [(f"blocks.{self.layer}.hook_resid_post", record)]

    def after_step(self, patterns: dict[int, Tensor], step: int) -> list[PruneEvent]:
        layout, judged = self.layout, step - 1
        if judged < 0 or layout.step_sizes()[judged] < 2:
            return []
        members = list(layout.step_range(judged))
        top = self.states[members[0]]
        similarity = {k: float(torch.nn.functional.cosine_similarity(top, self.states[k], dim=0)) for k in members[1:]}
        pruned = [k for k, sim in similarity.items() if sim >= self.strategy.similarity_threshold]
        events = []
        for k in pruned:
            layout.prune([k], at_step=step, score=similarity[k])
        if pruned:
            events.append(PruneEvent(judged, step, max(similarity[k] for k in pruned), members[0], tuple(pruned)))
        self.events.extend(events)
        return events


StrategyName = Literal["attention", "similarity"]
STRATEGIES: dict[StrategyName, type[AttentionPruning] | type[SimilarityPruning]] = dict(
    zip(get_args(StrategyName), (AttentionPruning, SimilarityPruning))
)


def describe_strategy(strategy: TabledStrategy) -> dict:
    """A strategy as its config table (``strategy`` plus every ``TABLE`` key), the inverse of :func:`strategy_from_table`."""
    name = next(n for n, cls in STRATEGIES.items() if isinstance(strategy, cls))
    values = {key: getattr(strategy, attr) for key, attr in strategy.TABLE.items()}
    return {"strategy": name, **{k: list(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()}}


def strategy_from_table(table: dict) -> AttentionPruning | SimilarityPruning:
    """A strategy from a config table; every setting it leaves out keeps the strategy's own default."""
    name = check_choice(table.get("strategy", "attention"), "pruning.strategy", get_args(StrategyName))
    cls = STRATEGIES[name]  # type: ignore[index]
    reject_unknown(table, {"strategy", *cls.TABLE}, f"[pruning] (strategy {name!r})")
    return cls(**{cls.TABLE[key]: value for key, value in table.items() if key != "strategy"})
