"""On the default model, the report's numbers agree whichever backend produced the runs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from tempo_lens.cli import main

ANALYSES = Path(__file__).resolve().parents[3] / "analyses"


def _numbers(value, path=""):
    """Every number in a JSON document by its path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{path}/{i}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)


def test_quick_report_numbers_agree_across_backends(embedded_hooked, tmp_path, monkeypatch):
    import tempo_lens.models.loading

    real = tempo_lens.models.loading.load_model
    monkeypatch.setattr(tempo_lens.models.loading, "load_model",
                        lambda *a, **k: embedded_hooked if k.get("backend") == "hooked" else real(*a, **k))
    metrics = {}
    for backend in ("bridge", "hooked"):
        folder = tmp_path / backend
        folder.mkdir()
        for config in ("exp1_isolated.toml", "exp1_visible.toml"):
            shutil.copy(ANALYSES / config, folder / config)
        assert main(["analyze", str(folder), "--quick", "--backend", backend]) == 0
        metrics[backend] = dict(_numbers(json.loads((folder / "report" / "metrics.json").read_text())))
    bridge, hooked = metrics["bridge"], metrics["hooked"]
    shared = [p for p in bridge if p in hooked and not any(w in p for w in ("seconds", "time", "elapsed", "version", "n_params"))]
    assert len(shared) > 20
    for path in shared:
        a, b = bridge[path], hooked[path]
        if math.isnan(a) or math.isnan(b):
            assert math.isnan(a) and math.isnan(b), path
        else:
            assert abs(a - b) <= 1e-3 + 1e-3 * abs(a), f"{path}: bridge {a} hooked {b}"
