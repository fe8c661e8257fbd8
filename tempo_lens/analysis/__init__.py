"""Analysis of captured TEMPO runs: pure functions from attention arrays + layout to tidy frames.

- :mod:`.ratios`: parallel : non-parallel attention ratio per step, per layer, per head;
- :mod:`.intra_step`: attention between siblings of one step;
- :mod:`.entropy`: per-layer attention entropy and the depth pattern;
- :mod:`.heads`: head specialisation (recent vs distant, entropy, grouping, GQA summary), per head and per (layer, head);
- :mod:`.distance`: the distance-matched ratio (each parallel key against other keys at the same logical distance);
- :mod:`.regression`: log attention over (query, key) pairs on parallel, distance and token kind;
- :mod:`.head_map`: per (layer, head) sink share and parallel coefficient;
- :mod:`.stats`: bootstrap intervals, paired permutation tests, direction words;
- :mod:`.captured`, :mod:`.labels`, :mod:`.edges`: a captured run from what a user passes, key labels, attention edges;
- :mod:`.metrics`: the findings report's numbers (a typed ``Metrics``, ``metrics.json``).

May import: io, errors, layout, capture, generation and experiment (the layers below); never figures, tools, report or app.
"""

from .entropy import depth_pattern, entropy_by_step, entropy_groups, layer_entropy, layer_entropy_table
from .heads import group_heads, head_specialisation, heads_by_kv_group, layer_head_specialisation
from .intra_step import intra_step_attention, intra_step_table
from .ratios import (
    KeyBuckets,
    RatioResult,
    key_buckets,
    mode_averages,
    parallel_ratio,
    ratio_by_head,
    ratio_by_layer,
    ratio_table,
)
from .stats import (
    bootstrap_ci,
    ci_summary,
    direction_from_estimate,
    direction_from_interval,
    direction_word,
    paired_permutation_test,
)

__all__ = [
    "KeyBuckets",
    "RatioResult",
    "bootstrap_ci",
    "ci_summary",
    "depth_pattern",
    "direction_from_estimate",
    "direction_from_interval",
    "direction_word",
    "entropy_by_step",
    "entropy_groups",
    "group_heads",
    "head_specialisation",
    "heads_by_kv_group",
    "intra_step_attention",
    "intra_step_table",
    "key_buckets",
    "layer_entropy",
    "layer_entropy_table",
    "layer_head_specialisation",
    "mode_averages",
    "paired_permutation_test",
    "parallel_ratio",
    "ratio_by_head",
    "ratio_by_layer",
    "ratio_table",
]
