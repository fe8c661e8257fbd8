"""Report content (issue 21, classes 10-12): user strings are shown, never interpreted; the layout's
own folder names are reserved; runs of different models or dtypes are never mixed silently.

The escaping checks render FINDINGS.md the way a permissive Markdown viewer would (raw HTML, links and
images on) and require that nothing of the user's becomes an element or a link, and scan every
``src``/``href`` attribute of report.html for a remote URL.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tempo_lens.io.checksums import sha256_of
from tempo_lens.errors import ConfigError
from tempo_lens.experiment import config_from_dict
from tempo_lens.experiment.storage import _metadata_digest
from tempo_lens.report.findings import render_findings
from tempo_lens.analysis.metrics.schema import parse_metrics
from tests.reliability.conftest import assert_clean_refusal, run_cli, snapshot

HOSTILE_NAME = "m![i](http:evil.example) <b>B <img src=x onerror=alert(1)>"
HOSTILE = '<script>alert(1)</script><img src="http://evil.example/x.png" onerror=alert(2)>[l](https://evil.example)'
SETTINGS = 'threshold = 1e-6\nmax_parallel = 2\nmax_steps = 2\n'
ELEMENTS = {"img", "script", "a", "b", "iframe", "svg", "object", "embed", "link", "style", "video", "audio"}


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def elements(html: str) -> list[tuple[str, dict]]:
    parser = _Elements()
    parser.feed(html)
    return parser.tags


def assert_markdown_inert(md: str) -> None:
    """Rendered by a viewer that allows raw HTML, links and images: no element or link comes from user text."""
    viewer = MarkdownIt("commonmark", {"html": True})
    for tag, attrs in elements(viewer.render(md)):
        assert tag not in ELEMENTS, f"FINDINGS.md renders a <{tag}> element: {attrs}"
        assert not any(name.startswith("on") or name in ("src", "href") for name in attrs), (tag, attrs)


def assert_html_offline(html: str) -> None:
    """No ``src``/``href`` attribute of report.html points anywhere remote, and no user element exists."""
    for tag, attrs in elements(html):
        for name in ("src", "href"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http", "//", "ftp", "data:text/html")), f"<{tag} {name}={value!r}>"
        assert tag not in ("img", "iframe", "a", "b", "object", "embed"), (tag, attrs)
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
    for raw in ("<b>B", "<img src=\"http://evil", "<script>alert"):
        assert raw not in html


@pytest.fixture(scope="module")
def hostile(tiny_dirs, tmp_path_factory):
    """``analyze`` on configs whose names and prompt carry Markdown images, raw HTML and script."""
    folder = tmp_path_factory.mktemp("hostile_report")
    prompt = json.dumps(f"t1 t17 t42 {HOSTILE}")
    (folder / "a.toml").write_text(f'name = {json.dumps(HOSTILE_NAME)}\nprompt = {prompt}\nmode = "isolated"\n' + SETTINGS)
    (folder / "b.toml").write_text(f'name = {json.dumps(HOSTILE_NAME + " v")}\nprompt = {prompt}\nmode = "visible"\n' + SETTINGS)
    rc, _, err = run_cli(["analyze", str(folder), "--model", str(tiny_dirs["llama"])])
    assert rc == 0, err
    report = folder / "report"
    return {"folder": folder, "md": (report / "FINDINGS.md").read_text(), "html": (report / "report.html").read_text(),
            "metrics": (report / "metrics.json").read_text()}


def test_hostile_config_names_and_prompts_are_shown_not_rendered(hostile):
    assert_markdown_inert(hostile["md"])
    assert_html_offline(hostile["html"])
    assert "evil.example" in hostile["md"]  # shown as text, not dropped


def _hostile_metrics(text: str):
    metrics = parse_metrics(text)
    single = metrics.single_run
    runs = [dataclasses.replace(r, experiment=HOSTILE, name="p00/../" + HOSTILE, prompt=HOSTILE, text=HOSTILE,
                                steps=[dataclasses.replace(s, tokens=[HOSTILE] * len(s.tokens)) for s in r.steps])
            for r in single.runs]
    single = dataclasses.replace(single, isolated_experiment=HOSTILE, visible_experiment=HOSTILE + "/" + HOSTILE_NAME, runs=runs)
    figures = metrics.figures
    figures = dataclasses.replace(
        figures,
        heatmaps=[dataclasses.replace(h, labels=[HOSTILE] * len(h.labels), title=HOSTILE) for h in figures.heatmaps],
        lattice=[dataclasses.replace(l, name=HOSTILE, tokens=[HOSTILE] * len(l.tokens)) for l in figures.lattice],
    )
    return dataclasses.replace(metrics, model=dataclasses.replace(metrics.model, name=HOSTILE_NAME), single_run=single,
                               figures=figures, versions={HOSTILE: HOSTILE})


def test_every_user_string_of_the_metrics_is_shown_not_rendered(hostile):
    """Names, run names (with / in them), prompts, generated text, tokens, labels, the model name, versions."""
    document = render_findings(_hostile_metrics(hostile["metrics"]))
    assert_markdown_inert(document.to_markdown())
    assert_html_offline(document.to_html())


def test_the_html_renderer_never_makes_links_or_images():
    from tempo_lens.report.document import Document

    doc = Document("t")
    doc.p("![x](http://evil.example/a.png) [y](https://evil.example) <https://evil.example> <img src=//evil.example>")
    html = doc.to_html()
    assert_html_offline(html)


# ---- class 11: reserved names ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["report", "Report", "runs", "models", "shard-0-of-2"])
def test_the_layouts_own_folder_names_are_refused_as_experiment_names(name, tmp_path):
    with pytest.raises(ConfigError, match="reserved"):
        config_from_dict({"name": name, "prompt": "t1 t2"})
    config = tmp_path / "c.toml"
    config.write_text(f'name = "{name}"\nprompt = "t1 t2"\n')
    rc, _, err = run_cli(["analyze", str(tmp_path)])
    assert_clean_refusal(rc, err, "reserved")


def test_a_saved_experiment_named_report_is_not_taken_for_the_report_folder(hostile, tmp_path):
    folder = tmp_path / "saved"
    folder.mkdir()
    for name in ("runs",):
        shutil.copytree(hostile["folder"] / name, folder / name)
    shutil.copytree(next((hostile["folder"] / "runs").iterdir()), folder / "report")  # an experiment where the report goes
    before = snapshot(folder / "report")
    rc, _, err = run_cli(["analyze", str(folder)])
    assert_clean_refusal(rc, err, "report", "saved experiment")
    assert snapshot(folder / "report") == before


# ---- class 12: mixed models or dtypes ----------------------------------------------------------------

def _resign(folder: Path, change) -> None:
    path = folder / "metadata.json"
    data = json.loads(path.read_text())
    change(data)
    data["arrays_sha256"] = sha256_of(folder / "attention.npz")
    data["metadata_sha256"] = _metadata_digest(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("field, value", [("name", "qwen2.5-0.5b"), ("dtype", "bfloat16")])
def test_saved_runs_of_different_models_or_dtypes_are_refused(field, value, hostile, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(hostile["folder"] / "runs", folder / "runs")
    one = sorted((folder / "runs").iterdir())[0]
    _resign(one, lambda d: d["model"].__setitem__(field, value))
    rc, _, err = run_cli(["analyze", str(folder)])
    assert_clean_refusal(rc, err, "different models or dtypes", value)
    assert not (folder / "report").exists()


def test_the_report_states_the_dtype(hostile):
    assert "float32" in hostile["md"].split("## Executive Summary")[0]


def test_configs_naming_different_models_are_refused_before_anything_runs(tiny_dirs, tmp_path, no_model_load):
    (tmp_path / "a.toml").write_text(f'name = "a"\nprompt = "t1 t2"\nmode = "isolated"\nmodel = "{tiny_dirs["llama"]}"\n')
    (tmp_path / "b.toml").write_text(f'name = "b"\nprompt = "t1 t2"\nmode = "visible"\nmodel = "{tiny_dirs["llama"]}"\n'
                                     'dtype = "bfloat16"\n')
    rc, _, err = run_cli(["analyze", str(tmp_path)])
    assert_clean_refusal(rc, err, "different models or dtypes", "bfloat16")
    assert not (tmp_path / "runs").exists()
