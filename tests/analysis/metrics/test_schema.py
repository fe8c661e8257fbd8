"""metrics.json: written and read back into the same typed records; other versions and bad fields refused."""

from __future__ import annotations

import json

import pytest

from tempo_lens.errors import ExperimentFileError
from tempo_lens.analysis.metrics.codec import decode, encode
from tempo_lens.analysis.metrics.schema import SCHEMA_VERSION, Interval, Metrics, metrics_json, parse_metrics, read_metrics


def test_round_trip_is_exact(metrics):
    text = metrics_json(metrics)
    again = parse_metrics(text)
    assert again == metrics
    assert metrics_json(again) == text
    assert isinstance(again.single_run.ratios[0].step, int) and isinstance(again.figures.heatmaps[0].z[0][0], float)


def test_written_file_has_the_version_and_strict_json(report):
    data = json.loads(report["metrics_text"])
    assert data["schema_version"] == SCHEMA_VERSION
    assert "NaN" not in report["metrics_text"] and "Infinity" not in report["metrics_text"]


def test_other_versions_are_refused_with_both_numbers(report, tmp_path):
    data = json.loads(report["metrics_text"])
    data["schema_version"] = SCHEMA_VERSION + 1
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ExperimentFileError, match=f"version {SCHEMA_VERSION + 1}.*reads version {SCHEMA_VERSION}"):
        read_metrics(path)


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["single_run"]["ratios"][0].update(step="three"), r"single_run.ratios\[0\].step"),
    (lambda d: d["model"].pop("n_layers"), "model.n_layers"),
    (lambda d: d.update(single_run=[]), "single_run"),
])
def test_a_field_that_does_not_fit_is_named(report, edit, field):
    data = json.loads(report["metrics_text"])
    edit(data)
    with pytest.raises(ExperimentFileError, match=field):
        decode(Metrics, data)


def test_nan_is_written_as_null_and_read_as_none():
    assert encode(Interval(mean=float("nan"), lo=float("inf"))) == {"mean": None, "lo": None, "hi": None, "n": 0, "p": None, "null": 1.0, "n_na": 0, "test_direction": None}
    assert decode(Interval, {"mean": 1, "n": 2}) == Interval(mean=1.0, n=2)
    with pytest.raises(ExperimentFileError, match="n"):
        decode(Interval, {"mean": 1.0, "n": True})
