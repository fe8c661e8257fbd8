"""How much the benchmark measures (:class:`BenchConfig`) and the goals it reports against (``TARGETS``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BenchConfig:
    """How much to measure. ``rounds`` x ``block`` samples per variant; variants alternate every block."""

    context: int = 64                      # context of sections 1, 2, 4
    ks: tuple[int, ...] = (1, 2, 4, 8)     # siblings per TEMPO step
    rounds: int = 21
    block: int = 1
    linear_rounds: int = 12
    path_rounds: int = 30                  # section 9: interleaved rounds of the speed-path A/B
    scaling_contexts: tuple[int, ...] = (32, 128, 512, 1024)
    scaling_k: int = 2
    scaling_rounds: int = 3
    scaling_block: int = 4
    naive_block: int = 1
    capture_contexts: tuple[int, ...] = (64, 512)
    capture_k: int = 2
    profile_steps: int = 20
    analysis_steps: int = 100
    analysis_shape: tuple[int, int, int] = (28, 24, 8)   # reference model: 28 layers, 24 heads, 8 KV heads
    analysis_repeats: int = 3
    mode: str = "isolated"
    seed: int = 0
    # section 7, the throughput sweep: prompts x steps, one at a time against batches of each size
    sweep_prompts: int = 16
    sweep_steps: int = 10
    sweep_batch_sizes: tuple[int, ...] = (1, 4, 16)
    sweep_rounds: int = 2
    sweep_models: tuple[str, ...] = ("qwen2.5-1.5b",)   # besides the benchmark's own model, where installed
    sweep_memory: bool = True                           # peak memory per batch size, one child process each
    sweep_settings: dict = field(default_factory=lambda: {"threshold": 0.1})
    brief: bool = False                                 # section 8: fewer prompts one at a time, one round (--quick)

    @classmethod
    def quick(cls) -> "BenchConfig":
        return cls(rounds=3, linear_rounds=3, path_rounds=3, scaling_rounds=1, scaling_block=2, profile_steps=5, analysis_repeats=1,
                   sweep_rounds=1, brief=True)


TARGETS = {
    "parallel": 1.15,     # TEMPO step with k siblings / plain one-token decode, default settings
    "bridge_over_hf": 1.20,   # bridge cached decode, default settings / raw HF eager cached decode
    "hooks": 1.10,        # hooks on / off at equal work
    "capture": 1.20,      # capture all layers / no capture
    "analysis_s": 1.0,    # seconds for every report metric over 100 steps
    "sweep_speedup": 6.0,     # throughput at the largest batch / one prompt at a time
    "sweep_batch1": 1.05,     # generate_batch with B = 1 / generate
}
