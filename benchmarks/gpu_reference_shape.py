"""TEMPO tokens per second on a random-weight model with the reference model's shape (GPU, bf16).

The reference report used cogito-v1-preview-llama-3B: 28 layers, 24 heads, hidden 3072, 8 KV heads,
llama3 rope scaling. This builds a random-weight Llama of that shape (no download), boots it through
``tempo_lens.load_model`` and times, interleaved, a plain cached one-token decode and TEMPO steps with
k = 1, 2, 4, 8 siblings (hooks on) at a fixed context; it prints ms per step, the ratio to the decode,
and generated tokens per second (k tokens per TEMPO step). Run it where a GPU is at hand:

    python benchmarks/gpu_reference_shape.py            # cuda, bf16, the reference shape
    python benchmarks/gpu_reference_shape.py --tiny     # a smoke run on any machine (used by the tests)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from tempo_lens import load_model  # noqa: E402
from tempo_lens.generation import forward_step, new_cache, select_siblings  # noqa: E402
from tempo_lens.hooks import tempo_hooks  # noqa: E402
from tempo_lens.layout import TokenLayout  # noqa: E402

REFERENCE_SHAPE = dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                       num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072)
TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=96, max_position_embeddings=256)
ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}


def build_random_model(shape: dict, directory: str) -> str:
    from tokenizers import Tokenizer, models
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    rope = {**ROPE, "original_max_position_embeddings": min(8192, shape["max_position_embeddings"] // 16)}
    config = LlamaConfig(**shape, rope_parameters=rope, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.02)
    model.save_pretrained(directory)
    vocab = {f"t{i}": i for i in range(min(shape["vocab_size"], 1000))}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")),
                                        bos_token="t1", eos_token="t2", unk_token="t0")
    tokenizer.save_pretrained(directory)
    return directory


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(model, context: int, ks: list[int], rounds: int) -> dict:
    device = next(model.original_model.parameters()).device
    prompt = [1] + [int(t) for t in torch.randint(3, min(model.cfg.d_vocab, 1000), (context - 1,))]
    times: dict[str, list[float]] = {"decode": [], **{f"tempo_{k}": [] for k in ks}}
    with torch.no_grad():
        for r in range(rounds + 1):  # round 0 warms up
            for name in (list(times) if r % 2 else list(times)[::-1]):
                layout = TokenLayout.from_prompt(prompt)
                cache = new_cache(model)
                k = 1 if name == "decode" else int(name.split("_")[1])
                hooks = [] if name == "decode" else tempo_hooks(model, layout, "isolated")
                with model.hooks(fwd_hooks=hooks):
                    logits = forward_step(model, [prompt], cache)[0]
                    ids, probs, _ = select_siblings(torch.softmax(logits[-1].float(), -1), 0.0, k)
                    layout.append_step(ids, probs)
                    sync(device)
                    start = time.perf_counter()
                    forward_step(model, [ids], cache)
                    sync(device)
                    if r:
                        times[name].append(time.perf_counter() - start)
    decode = statistics.median(times["decode"])
    rows = [{"k": k, "ms": 1e3 * statistics.median(times[f"tempo_{k}"]),
             "vs_decode": statistics.median(times[f"tempo_{k}"]) / decode,
             "tokens_per_s": k / statistics.median(times[f"tempo_{k}"])} for k in ks]
    return {"context": context, "decode_ms": 1e3 * decode, "decode_tokens_per_s": 1 / decode, "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny shape on whatever device is here (smoke run)")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print("error: no GPU here; this benchmark is for a GPU machine (use --tiny for a smoke run)", file=sys.stderr)
        return 2
    shape = TINY_SHAPE if args.tiny else REFERENCE_SHAPE
    with tempfile.TemporaryDirectory() as directory:
        build_random_model(shape, directory)
        dtype = torch.bfloat16 if cuda else torch.float32
        model = load_model(directory, device="cuda" if cuda else "cpu", dtype=dtype)
        result = measure(model, min(args.context, shape["max_position_embeddings"] - 16), [1, 2, 4, 8], args.rounds)
    device = torch.cuda.get_device_name() if cuda else "cpu"
    result.update(device=device, dtype=str(dtype), shape=shape)
    print(f"{device}, {dtype}, {shape['num_hidden_layers']} layers / {shape['num_attention_heads']} heads / hidden "
          f"{shape['hidden_size']}, context {result['context']}")
    print(f"plain cached decode: {result['decode_ms']:.2f} ms/step, {result['decode_tokens_per_s']:.1f} tokens/s")
    for row in result["rows"]:
        print(f"TEMPO k={row['k']}: {row['ms']:.2f} ms/step ({row['vs_decode']:.2f}x decode), {row['tokens_per_s']:.1f} tokens/s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
