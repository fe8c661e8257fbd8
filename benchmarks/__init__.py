"""`make bench`: what TEMPO costs when it is done only through TransformerLens hook points.

Every number printed is a *ratio* of two variants measured side by side in one run
(:mod:`benchmarks.harness`); nothing here is a timed assertion. Every section runs with the default
settings of ``tempo_lens.load_model`` (the fast paths of ``tempo_lens.backends.bridge.fast_paths`` on) and says so;
"stock" variants force the fast paths off. Each section is one module:

1. parallel tokens almost free: TEMPO step with k siblings (hooks on) / plain one-token decode
   (:mod:`~benchmarks.parallel`); 1b: the model's linear layers alone with k rows (what limits 1), 1c: 1 again
   with the fast paths forced off (:mod:`~benchmarks.linear`)
2. hooks cheap: TEMPO step with hooks on / the same step with hooks off (equal work; :mod:`~benchmarks.parallel`)
3. linear, not quadratic: cached TEMPO step vs a naive full recompute, contexts 32..1024 (:mod:`~benchmarks.scaling`)
4. TransformerLens overhead: bridge cached decode (defaults, and stock) / raw HF eager cached decode (:mod:`~benchmarks.overhead`),
   plus a profile (:mod:`~benchmarks.profiling`)
5. capture: pattern capture on all layers / no capture, plus bytes stored per step (:mod:`~benchmarks.capture`)
6. analysis throughput: every report metric over 100 synthetic steps shaped like the reference (:mod:`~benchmarks.analysis`)
7. throughput sweep: 16 prompts x 10 steps, ``generate_batch`` in batches of 1, 4, 16 / one at a time, with peak
   memory per batch size (:mod:`~benchmarks.sweep`, :mod:`~benchmarks.memory`)
8. against plain HF generate: steps/s of ``generate`` / ``generate_batch`` (hooks, bookkeeping, every sibling;
   then one token per step; then with capture) beside greedy ``hf.generate``, eager and sdpa, B = 1 and B = 16,
   on the default model and qwen2.5-1.5b where installed (:mod:`~benchmarks.generate`; ``python -m
   benchmarks.generate --backend hooked`` measures HookedTransformer, in ``.venv-tl3``)
9. what each speed path is worth: an interleaved A/B of a TEMPO step with and without each path, forced kernels
   included, with a bootstrap 95 % interval (:mod:`~benchmarks.changes`; about 2 minutes on a quiet machine)
10. the nnsight backend: section 8 with ``--backend nnsight`` plus nnsight's fixed cost per trace (one cached
   one-token forward: HF's own / an nnsight trace / a trace capturing every layer), ``python -m
   benchmarks.nnsight_trace`` (:mod:`~benchmarks.nnsight_trace`; not part of ``make bench``)

Apart from the sections, ``python -m benchmarks.wait_policy`` (:mod:`~benchmarks.wait_policy`) measures a decode and
a k-sibling forward under three OpenMP wait policies, one process alone and two at once.

:mod:`~benchmarks.summary` prints the tables and the summary; :mod:`~benchmarks.runner` is the command line.

Usage::

    python -m benchmarks [--quick] [--json PATH] [--only 1,2,4] [--model DIR] [--device cuda] [--sweep-models LIST]
    python benchmarks/bench.py ...      # the same (what `make bench` runs)
"""

import os

_ENVIRONMENT = {
    "OMP_WAIT_POLICY": "PASSIVE",   # spinning OpenMP threads on a shared box: 20x slower steps
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def set_environment() -> None:
    """The benchmark's environment defaults (an explicit setting wins); call before torch is imported."""
    for key, value in _ENVIRONMENT.items():
        os.environ.setdefault(key, value)


# Set when the package is imported: `python -m benchmarks.<module>` imports this package before the module's own
# imports load torch (whose OpenMP runtime reads OMP_WAIT_POLICY once, when it loads). A process started with an
# environment chosen on purpose (the wait-policy benchmark's children, some without any policy) says so with
# ``TEMPO_BENCH_ENVIRONMENT=given`` and keeps it.
if os.environ.get("TEMPO_BENCH_ENVIRONMENT") != "given":
    set_environment()
