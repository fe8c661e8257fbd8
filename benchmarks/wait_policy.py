"""What the OpenMP wait policy does to a decode and to a k-sibling step: ``python -m benchmarks.wait_policy``.

``make``, the CLI and ``make bench`` set ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP threads sleep at once
instead of spinning. Spinning threads take cores from other processes; with two processes on two cores the
default policy makes each step several times slower. Alone on the machine, though, sleeping threads must be
woken for every parallel region, and a step pays for that (one policy runs a single thread, which never waits). The policy is read when OpenMP starts, so each
setting runs in fresh processes: one alone, then two at once. Each process times a cached forward of 1 and
of k new tokens at a fixed context, alternating, and reports the medians and the median paired ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from .memory import ROOT

THREADS = "TEMPO_LENS_BENCH_THREADS"  # torch.set_num_threads in the measuring process (unset: torch's choice)

POLICIES = {
    "PASSIVE (the project's setting)": {"OMP_WAIT_POLICY": "PASSIVE"},
    "PASSIVE, one thread": {"OMP_WAIT_POLICY": "PASSIVE", THREADS: "1"},
    "GOMP_SPINCOUNT=10000 (short spin)": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "10000"},
    "OpenMP default (spin, then sleep)": {"OMP_WAIT_POLICY": ""},
}


def measure(k: int, context: int, rounds: int, model_path: str | None = None) -> dict:
    """In this process: cached forwards of 1 and of ``k`` tokens at ``context``, alternating."""
    import torch

    from tempo_lens import load_model
    from tempo_lens.generation import forward_step, new_cache

    if os.environ.get(THREADS):
        torch.set_num_threads(int(os.environ[THREADS]))
    model = load_model(model_path)
    generator = torch.Generator().manual_seed(context)
    ids = torch.randint(3, int(model.cfg.d_vocab), (context + k,), generator=generator).tolist()
    ids, new = ids[:context], ids[context:]
    times: dict[int, list[float]] = {1: [], k: []}
    with torch.no_grad():
        cache = new_cache(model)
        forward_step(model, [ids], cache)
        for r in range(rounds + 2):  # two warm-up rounds
            for n in ((1, k) if r % 2 else (k, 1)):
                started = time.perf_counter()
                forward_step(model, [new[:n]], cache)
                elapsed = time.perf_counter() - started
                cache.crop(-n)
                if r >= 2:
                    times[n].append(elapsed)
    paired = [b / a for a, b in zip(times[1], times[k])]
    return {"decode_ms": 1e3 * statistics.median(times[1]), "k_ms": 1e3 * statistics.median(times[k]),
            "k_over_decode": statistics.median(paired)}


def _children(env_extra: dict, at_once: int, k: int, context: int, rounds: int, model_path: str | None) -> list[dict]:
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", THREADS)}
    env.update({key: value for key, value in env_extra.items() if value})
    env["TEMPO_BENCH_ENVIRONMENT"] = "given"  # the package adds no defaults: "OpenMP default" means no policy at all
    command = [sys.executable, "-m", "benchmarks.wait_policy", "--child", f"{k},{context},{rounds}"]
    command += ["--model", model_path] if model_path else []
    procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(at_once)]
    outs = []
    for proc in procs:
        stdout, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"a measuring process failed (exit {proc.returncode})")
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    return outs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wait_policy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=8, help="tokens in the k-sibling forward (default 8)")
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--model", default=None, help="a local model directory instead of the embedded SmolLM2-135M")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        k, context, rounds = (int(x) for x in args.child.split(","))
        print(json.dumps(measure(k, context, rounds, args.model)))
        return 0
    print(f"{args.model or 'embedded model'}, context {args.context}, k = {args.k}, {args.rounds} alternating rounds per process; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    print(f"{'policy':36s} {'processes':>9s} {'decode ms':>10s} {'k ms':>8s} {'k / decode':>10s}")
    for label, env in POLICIES.items():
        for at_once in (1, 2):
            for out in _children(env, at_once, args.k, args.context, args.rounds, args.model):
                print(f"{label:36s} {at_once:>9d} {out['decode_ms']:>10.1f} {out['k_ms']:>8.1f} {out['k_over_decode']:>9.2f}x")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
