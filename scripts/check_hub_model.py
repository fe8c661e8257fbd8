"""Check TEMPO on a real model from the Hugging Face hub (or any local directory), where CI cannot.

Loads the model through ``tempo_lens.load_model`` (optionally with ``--device-map auto`` for a model
larger than one GPU), runs a short TEMPO generation in both modes and compares every step's logits
with Hugging Face eager attention called on the whole sequence with explicit position_ids and a 4D
float mask (the project's oracle). Needs the model in the local cache or network access.

    python scripts/check_hub_model.py deepcogito/cogito-v1-preview-llama-3B [--device-map auto] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import sys

import torch


def oracle_mask(layout, mode: str) -> torch.Tensor:
    blocked = layout.blocked(mode)
    return torch.zeros(blocked.shape).masked_fill(blocked, float("-inf"))[None, None]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--device-map", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompt", default="The cat sat on the")
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--tolerance", type=float, default=None, help="default 1e-3 in float32, 5e-2 otherwise")
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM

    from tempo_lens import load_model
    from tempo_lens.generation import generate

    dtype = getattr(torch, args.dtype)
    tolerance = args.tolerance or (1e-3 if dtype == torch.float32 else 5e-2)
    model = load_model(args.model, dtype=dtype, device_map=args.device_map)
    print(f"loaded {args.model}: {model.cfg.n_layers} layers, {model.cfg.n_heads} heads, n_ctx {model.cfg.n_ctx}")
    hf = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation="eager", dtype=dtype,
                                              device_map=args.device_map or None).eval()
    device = next(hf.parameters()).device
    worst = 0.0
    for mode in ("isolated", "visible"):
        result = generate(model, args.prompt, threshold=0.05, max_steps=args.max_steps, mode=mode, keep_logits=True)
        layout = result.layout
        with torch.no_grad():
            oracle = hf(input_ids=torch.tensor([layout.token_ids], device=device),
                        position_ids=layout.positions("shared").long()[None].to(device),
                        attention_mask=oracle_mask(layout, mode).to(device, dtype)).logits[0].float().cpu()
        delta = max((oracle[layout.step_range(s).start : layout.step_range(s).stop] - rows.float()).abs().max().item()
                    for s, rows in enumerate(result.step_logits))
        worst = max(worst, delta)
        print(f"{mode}: {result.text!r}\n  step sizes {layout.step_sizes()}, max |delta logit| vs HF eager {delta:.2e}")
    ok = worst < tolerance
    print(f"{'PASS' if ok else 'FAIL'}: worst {worst:.2e} (tolerance {tolerance:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
