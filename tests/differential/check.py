"""Run one drawn case and check it: every step against the HF eager oracle, and the invariants.

Failures are collected under a check name (see ``CHECKS``) instead of raised at the first one, so
that :mod:`.known` can excuse exactly the checks a known, open bug breaks and nothing else.
"""

from __future__ import annotations

import contextlib
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from hypothesis import currently_in_test_context, note

from tempo_lens.backends import backend_for
from tempo_lens.errors import TempoLensError
from tempo_lens.generation import generate, generate_batch
from tempo_lens.pruning import AttentionPruning, SimilarityPruning
from tests.helpers import hf_oracle_logits, oracle_mask, reference_mask, sliding_window_of

from .cases import Case, pos_axis
from .models import ModelShelf, family_shape

Check = Literal[
    "run",  # the generation raised (not a deliberate refusal)
    "refusal",  # a deliberate refusal where the case is within every limit, or after model work began
    "logits",  # a step's logits rows against the oracle's rows of the same tokens
    "probs",  # the recorded sibling probabilities against the oracle's next-token distribution
    "selection",  # the siblings are not the tokens that clear the threshold under the oracle's distribution
    "capture",  # captured attention against the oracle's attention, or missing steps
    "blocked",  # a blocked key (a sibling in isolated mode, a pruned key) got attention that is not exactly 0
    "hook_calls",  # a user hook did not fire once per forward
    "hook_rows",  # a user hook did not see one row per fed token (per sibling)
    "model_changed",  # the fixed probe's logits differ after the case
    "hooks_left",  # a hook (TransformerLens's or torch's) left on the model after the case
]
CHECKS: tuple[str, ...] = Check.__args__  # type: ignore[attr-defined]
PROBE = [1, 5, 9, 13, 17, 21, 25, 29]  # a fixed input whose logits must be bit-identical before and after


@dataclass(frozen=True)
class Tolerance:
    """Bounds on the difference from the fp32 oracle."""

    logits: float  # max |logit difference|
    probs: float  # max |probability difference|
    attention: float  # max |attention-weight difference|


# fp32: the rounding of a cached, chunked forward against one full forward of a 3-layer model.
FP32 = Tolerance(1e-4, 1e-5, 1e-5)
# bf16 is held to the fp32 oracle, as close as BF16_FACTOR times HF eager's own bf16 forward is on the same rows,
# plus 1/64 (a bf16 ulp is 1/128 relative). Measured on 100 drawn cases: the bridge on TransformerLens 4.3 equals
# the bf16 oracle bit for bit on most rows (ratio 1.0), the bridge on 3.9 and HookedTransformer round differently
# (ratio up to 1.7); both oracles are up to 0.26 apart. Probabilities and attention get matching absolute slack.
BF16 = Tolerance(2**-6, 0.05, 0.05)
BF16_FACTOR = 3.0


@dataclass(frozen=True)
class Failure:
    check: str
    message: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.message}"


@dataclass
class HookLog:
    """What one user hook saw: the size of its token axis at each call."""

    kind: str
    name: str
    sizes: list[int] = field(default_factory=list)


@dataclass
class Run:
    """A case's outcome: results (or the error), the user hooks' logs, and the failed checks."""

    case: Case
    results: list[Any] = field(default_factory=list)
    error: BaseException | None = None
    logs: list[HookLog] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    worst: dict[str, float] = field(default_factory=dict)  # the largest difference each oracle comparison measured
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Keep ``text`` for the failure message, and hand it to hypothesis when a hypothesis test runs."""
        self.notes.append(text)
        if currently_in_test_context():
            note(text)

    def measured(self, check: str, delta: float) -> None:
        self.worst[check] = max(self.worst.get(check, 0.0), delta)

    @property
    def refused(self) -> bool:
        return isinstance(self.error, TempoLensError)

    def fail(self, check: str, message: str) -> None:
        assert check in CHECKS, check
        self.failures.append(Failure(check, message))

    def physical_lengths(self) -> list[int]:
        return [len(result.layout) for result in self.results]


BOUNDED_BACKENDS = {"hooked"}  # HookedTransformer's rotary tables have n_ctx rows, read at physical positions


def physical_limit(case: Case) -> int | None:
    """The physical length past which a run may be refused: learned positions and TransformerLens's rotary
    tables have ``n_ctx`` rows; the bridge's rotary embedding takes any position (no limit)."""
    shape = family_shape(case.family)
    return shape.n_ctx if shape.learned_positions or case.backend in BOUNDED_BACKENDS else None


def strategy(case: Case) -> Any:
    if case.pruning is None:
        return None
    kind, value = case.pruning
    return AttentionPruning(value) if kind == "attention" else SimilarityPruning(value)


def hook_state(model: Any) -> dict:
    """Every hook on the model: torch's per module (and global), TransformerLens's per hook point."""
    from torch.nn.modules import module as torch_module

    state: dict = {}
    for name, module in traced_module(model).named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            hooks = getattr(module, attr, None)
            if hooks:
                state[(name, attr)] = tuple(hooks)
        for attr in ("fwd_hooks", "bwd_hooks"):
            hooks = getattr(module, attr, None)
            if hooks:
                state[(name, attr)] = len(hooks)
    for attr in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks"):
        hooks = getattr(torch_module, attr, None)
        if hooks:
            state[("torch", attr)] = tuple(hooks)
    return state


def calls_per_forward(model: Any, name: str) -> int:
    """How often ``name`` fires in one plain forward of the model, without TEMPO (HookedTransformer calls ``ln1``
    three times per block: once each for the query, key and value inputs). Counted with a TransformerLens hook."""
    calls: list[int] = []
    with torch.no_grad(), model.hooks(fwd_hooks=[(name, lambda tensor, hook: calls.append(1))]):
        model(torch.tensor([PROBE]))
    return len(calls)


def traced_module(model: Any) -> torch.nn.Module:
    """The torch module a backend runs: the model itself, or the Hugging Face model an nnsight wrapper traces."""
    return model._module if backend_for(model).name == "nnsight" else model


def probe_logits(model: Any) -> torch.Tensor:
    """Logits of a fixed input through the backend's own plain forward (no TEMPO)."""
    with torch.no_grad():
        return backend_for(model).forward(torch.tensor([PROBE])).detach().clone()


def run_case(shelf: ModelShelf, case: Case) -> Run:
    """Generate as the case says with the user's hooks attached, then run every check."""
    run = Run(case)
    run.note(f"case: {case}")
    model = shelf.model(case.family, case.backend, case.dtype, case.fast)
    hooks = [h for h in case.hooks if hasattr(model, "hook_dict")]
    multiplicity = {name: calls_per_forward(model, name) for _, name in hooks}
    before, state = probe_logits(model), hook_state(model)
    prompts = case.prompt_ids()
    tl_hooks, handles = [], []
    for kind, name in hooks:
        log = HookLog(kind, name)
        run.logs.append(log)
        axis = pos_axis(name)
        if kind == "tl":
            tl_hooks.append((name, lambda tensor, hook, log=log, axis=axis: log.sizes.append(tensor.shape[axis])))
        else:
            handles.append(
                model.hook_dict[name].register_forward_hook(
                    lambda module, args, out, log=log, axis=axis: log.sizes.append(out.shape[axis])
                )
            )
    settings = dict(
        mode=case.mode,
        threshold=case.threshold,
        max_parallel=case.max_parallel,
        max_steps=case.max_steps,
        pruning=strategy(case),
        capture=(list(case.capture) if isinstance(case.capture, tuple) else case.capture) or None,
        threshold_schedule=case.threshold_schedule,
        next_token_source=case.next_token_source,
        keep_logits=True,
        progress=False,
    )
    try:
        with warnings.catch_warnings(), model.hooks(fwd_hooks=tl_hooks) if tl_hooks else contextlib.nullcontext():
            warnings.simplefilter("ignore")
            if case.api == "generate":
                run.results = [generate(model, prompts[0], **settings)]
            else:
                run.results = generate_batch(model, prompts, batch_size=case.batch_size, **settings)
    except Exception as exc:  # noqa: BLE001 - every error is an outcome to judge
        run.error = exc
        run.note("error: " + "".join(traceback.format_exception_only(exc)).strip()[:500])
    finally:
        for handle in handles:
            handle.remove()
    check_model_unchanged(run, model, before, state)
    if run.error is not None:
        check_error(run)
        return run
    run.note(f"physical lengths {run.physical_lengths()}, steps {[r.layout.step_sizes() for r in run.results]}")
    check_hooks(run, prompts, multiplicity)
    for i, result in enumerate(run.results):
        check_against_oracle(run, shelf, result, row=i)
    return run


def check_model_unchanged(run: Run, model: Any, before: torch.Tensor, state: dict) -> None:
    after_state = hook_state(model)
    if after_state != state:
        extra = {k: v for k, v in after_state.items() if state.get(k) != v}
        run.fail("hooks_left", f"hooks left on the model: {sorted(map(str, extra))[:5]}")
    after = probe_logits(model)
    if not torch.equal(before, after):
        run.fail(
            "model_changed", f"probe logits differ by {(after.float() - before.float()).abs().max().item():.3g} after the case"
        )


def check_error(run: Run) -> None:
    """A deliberate refusal before any model work is right only where one prompt's physical length can pass a limit.

    Rows of a batch that each fit must not be refused because they would share a lane: ``generate_batch``
    promises each row what ``generate`` gives it.
    """
    error, case = run.error, run.case
    text = f"{type(error).__name__}: {error}"
    limit = physical_limit(case)
    if not run.refused:
        run.fail("run", text[:400])
    elif limit is None or case.physical_bound() <= limit:
        run.fail("refusal", f"refused within every limit (physical bound {case.physical_bound()}, limit {limit}): {text[:300]}")
    elif any(log.sizes for log in run.logs):
        run.fail(
            "refusal", f"refused after {max(len(log.sizes) for log in run.logs)} forwards, not before generation: {text[:300]}"
        )


def check_hooks(run: Run, prompts: list[list[int]], multiplicity: dict[str, int]) -> None:
    """Each user hook fires once per forward (as often as in a plain forward) and sees one row per token fed (per sibling)."""
    layouts = [result.layout for result in run.results]
    chunk_size = run.case.batch_size or len(layouts)  # the tiny models' memory estimate never lowers the default of 16
    fed = []  # per forward: each row's count of new tokens; a chunk of batch_size rows after another
    for first in range(0, len(layouts), chunk_size):
        chunk, chunk_prompts = layouts[first : first + chunk_size], prompts[first : first + chunk_size]
        fed.append([len(p) for p in chunk_prompts])
        for k in range(1, 1 + max(layout.n_steps for layout in chunk)):
            fed.append([len(layout.step_range(k - 1)) if layout.n_steps >= k else 0 for layout in chunk])
    n_forwards = len(fed)
    for log in run.logs:
        per = multiplicity[log.name]
        if len(log.sizes) != n_forwards * per:
            run.fail(
                "hook_calls",
                f"{log.kind} hook on {log.name} fired {len(log.sizes)} times in {n_forwards} forwards ({per} per plain forward)",
            )
            continue
        for k, (size, rows) in enumerate(zip(log.sizes, [f for f in fed for _ in range(per)])):
            ok = size == rows[0] if run.case.api == "generate" else max(rows) <= size <= sum(rows)
            if not ok:
                run.fail(
                    "hook_rows",
                    f"{log.kind} hook on {log.name} saw {size} tokens in call {k} (forward {k // per}), which fed {rows}",
                )
                break


def oracle_attention(hf: Any, layout: Any, mode: str) -> tuple[torch.Tensor, ...]:
    """HF eager's attention weights per layer, ``[head, query, key]``, for the whole physical sequence."""
    ids = torch.tensor([layout.token_ids])
    pos = torch.tensor(layout.logical_positions).long()[None]
    with torch.no_grad():
        out = hf(input_ids=ids, position_ids=pos, attention_mask=oracle_mask(hf, layout, mode), output_attentions=True)
    return tuple(a[0].float() for a in out.attentions)


def check_against_oracle(run: Run, shelf: ModelShelf, result: Any, row: int) -> None:
    """Logits, probabilities, selection and capture of every step against HF eager in fp32 on the same layout."""
    case, layout = run.case, result.layout
    where = f"row {row}" if case.api == "generate_batch" else "generate"
    hf = shelf.oracle(case.family)
    oracle = hf_oracle_logits(hf, layout, case.mode).float()
    tol = FP32
    if case.dtype != "float32":
        own = hf_oracle_logits(shelf.oracle(case.family, case.dtype), layout, case.mode).float()
        slack = BF16_FACTOR * (own - oracle)[layout.n_prompt :].abs().max().item()
        tol = Tolerance(BF16.logits + slack, BF16.probs, BF16.attention)
        run.note(
            f"{case.dtype} bound on logits: {tol.logits:.3g} (HF eager's own {case.dtype} rows are {slack / BF16_FACTOR:.3g} from fp32)"
        )
    n_prompt = layout.n_prompt
    distribution = torch.softmax(oracle[n_prompt - 1], -1)
    for step, rows in enumerate(result.step_logits):
        r = layout.step_range(step)
        check_selection(run, where, step, layout, distribution, tol.probs, case, result.thresholds[step])
        delta = (oracle[r.start : r.stop] - rows.float()).abs().max().item()
        run.measured("logits", delta)
        if not delta <= tol.logits:
            run.fail("logits", f"{where} step {step}: logits differ from the oracle by {delta:.3g} (bound {tol.logits:.3g})")
        distribution = next_distribution(
            torch.softmax(oracle[r.start : r.stop], -1), layout.probs[r.start : r.stop], case.next_token_source
        )
    if case.capture:
        check_capture(run, where, result, oracle_attention(hf, layout, case.mode), tol.attention, layer_windows(hf))


def next_distribution(rows: torch.Tensor, sibling_probs: list[float], source: str) -> torch.Tensor:
    """The next step's distribution from the oracle's rows of a step's siblings (docs/definitions.md)."""
    if source == "top":
        return rows[0]
    if source == "last":
        return rows[-1]
    weights = torch.tensor(sibling_probs, dtype=torch.float32)
    return (weights[:, None] / weights.sum() * rows).sum(0)


def check_selection(
    run: Run, where: str, step: int, layout: Any, distribution: torch.Tensor, tol: float, case: Case, threshold: float
) -> None:
    """The step's siblings are the tokens the oracle's distribution puts at or above the threshold, capped, most likely first."""
    r = layout.step_range(step)
    ids, probs = layout.token_ids[r.start : r.stop], layout.probs[r.start : r.stop]
    oracle_probs = distribution[ids]
    delta = (oracle_probs - torch.tensor(probs)).abs().max().item()
    run.measured("probs", delta)
    if not delta <= tol:
        run.fail("probs", f"{where} step {step}: sibling probabilities differ from the oracle's by {delta:.3g} (bound {tol:g})")
        return
    clear = set((distribution >= threshold + tol).nonzero().flatten().tolist())
    missing = clear - set(ids)
    low = [i for i, p in zip(ids[1:], oracle_probs[1:].tolist()) if p < threshold - tol]
    top_gap = distribution.max().item() - oracle_probs[0].item()
    if (missing and len(ids) < case.max_parallel) or low or top_gap > tol:
        run.fail(
            "selection",
            f"{where} step {step}: siblings {ids}, missing {sorted(missing)[:5]}, below threshold {low}, top gap {top_gap:.3g}",
        )


def layer_windows(hf: Any) -> list[int | None]:
    """Each layer's sliding window (None: full attention)."""
    config = hf.config.get_text_config(decoder=True)
    window = sliding_window_of(hf)
    types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    return [window if kind == "sliding_attention" else None for kind in types]


def check_capture(
    run: Run, where: str, result: Any, attention: tuple[torch.Tensor, ...], tol: float, windows: list[int | None]
) -> None:
    """Captured attention equals the oracle's rows, and every blocked key (sibling, pruned, out of the window) gets exactly 0."""
    layout, capture = result.layout, result.capture
    if capture is None or capture.step_ids != list(range(layout.n_steps)):
        run.fail("capture", f"{where}: captured steps {None if capture is None else capture.step_ids}, expected every step")
        return
    masks = {window: reference_mask(layout, run.case.mode, window) for window in set(windows)}
    for step in capture.step_ids:
        r = layout.step_range(step)
        array = torch.from_numpy(capture.steps[step])  # [layer, batch, head, query, key]
        expected_shape = (len(capture.layers), 1, attention[0].shape[0], len(r), r.stop)
        if tuple(array.shape) != expected_shape:
            run.fail("capture", f"{where} step {step}: captured shape {tuple(array.shape)}, expected {expected_shape}")
            return
        siblings = torch.zeros(len(r), r.stop, dtype=torch.bool)
        if run.case.mode == "isolated":
            siblings[:, r.start : r.stop] = ~torch.eye(len(r), dtype=torch.bool)
        unwindowed = torch.isinf(masks[None][r.start : r.stop, : r.stop])
        for i, layer in enumerate(capture.layers):
            got = array[i, 0]
            blocked = torch.isinf(masks[windows[layer]][r.start : r.stop, : r.stop])
            kinds = (
                (siblings, "isolated siblings"),
                (unwindowed & ~siblings, "pruned keys"),
                (blocked & ~unwindowed, "keys past the window"),
            )
            for keys, what in kinds:
                leak = got[:, keys].abs().max().item() if keys.any() else 0.0
                if leak != 0.0:
                    run.fail(
                        "blocked", f"{where} step {step} layer {layer}: {what} get attention up to {leak:.3g}, not exactly 0"
                    )
                    return
            want = attention[layer][:, r.start : r.stop, : r.stop]
            delta = (got - want).abs().max().item()
            run.measured("capture", delta)
            if not delta <= tol:
                run.fail("capture", f"{where} step {step} layer {layer}: attention differs from the oracle by {delta:.3g}")
                return
