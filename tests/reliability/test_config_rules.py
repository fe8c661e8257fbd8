"""Issue 32, class 3: a config is checked once, before anything is generated, by the rules ``load_experiment`` applies
to the saved folder; class 4: no setting makes a check spin (``max_steps`` of 10**12 is refused at once)."""

from __future__ import annotations

import signal
import time

import pytest

from tempo_lens.errors import ConfigError, InvalidInputError
from tempo_lens.experiment import config_from_dict, load_experiment, run_experiment, save_experiment
from tempo_lens.experiment.budget import attention_bytes
from tests.reliability.conftest import assert_clean_refusal, run_cli

# ---- class 3 -----------------------------------------------------------------------------------------------

REFUSED_BY_THE_LOADER = {
    "layers_twice": "[capture]\nlayers = [1, 1]\n",
    "steps_twice": "[capture]\nsteps = [0, 0]\n",
    "a_layer_among_others_twice": "[capture]\nlayers = [0, 2, 0]\n",
    "a_step_twice_of_three": "[capture]\nsteps = [1, 0, 1]\n",
}


@pytest.mark.parametrize("case", list(REFUSED_BY_THE_LOADER))
@pytest.mark.parametrize("command", ["run", "analyze"])
def test_a_capture_the_loader_refuses_is_refused_before_the_model_loads(tiny_dirs, tmp_path, case, command, no_model_load):
    config = tmp_path / "cfg" / "exp1_isolated.toml"
    config.parent.mkdir()
    config.write_text(f'prompt = "t1 t5"\nmodes = ["isolated", "visible"]\nmodel = "{tiny_dirs["llama"]}"\nmax_steps = 2\n'
                      + REFUSED_BY_THE_LOADER[case])
    argv = ["run", str(config), "--out", str(tmp_path / "out")] if command == "run" else ["analyze", str(config.parent)]
    rc, _, err = run_cli(argv)
    assert_clean_refusal(rc, err, "capture", "layers" if "layer" in case else "steps", "more than once")
    assert not (tmp_path / "out").exists() and not (config.parent / "runs").exists()


@pytest.mark.parametrize("capture", [[1, 1], [0, -1, 0]])
def test_the_python_api_refuses_a_layer_listed_twice(tiny_llama, capture, no_forward):
    from tempo_lens import generate

    with pytest.raises(InvalidInputError, match="more than once"):
        generate(tiny_llama, [1, 5], max_steps=1, capture=capture)


ACCEPTED = {
    "last_layer_by_its_negative": {"capture": {"layers": [-1, 0], "steps": [1]}},
    "every_layer_and_step": {"capture": {"layers": "all"}},
    "pruned": {"pruning": {"attention_threshold": 0.3}, "capture": {"steps": [0, 1]}},
    "two_modes_with_controls": {"modes": ["isolated", "visible"], "controls": ["unique_positions", "toggled_mask"]},
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_what_the_config_accepts_the_loader_reads_back(tiny_llama, tmp_path, case):
    """The same rules both ways: a config that passes is generated, saved and loaded without a refusal."""
    config = config_from_dict({"prompt": "t1 t17 t42", "threshold": 1e-6, "max_parallel": 2, "max_steps": 2, **ACCEPTED[case]})
    path = save_experiment(run_experiment(config, tiny_llama), tmp_path / case)
    assert load_experiment(path).runs


def test_a_layer_past_the_model_is_refused_after_the_load_before_any_forward(tiny_llama, no_forward):
    config = config_from_dict({"prompt": "t1 t5", "max_steps": 1, "capture": {"layers": [-4]}})
    with pytest.raises(InvalidInputError, match=r"capture layers \[-4\]"):
        run_experiment(config, tiny_llama)


# ---- class 4 -----------------------------------------------------------------------------------------------

@pytest.fixture
def no_hang():
    """Fail instead of spinning: the check must return within 20 s."""
    def alarm(*_):
        raise AssertionError("the check spun for 20 s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("command", ["run", "analyze"])
@pytest.mark.parametrize("max_steps", [10**12, 10**9, 2**62])
def test_a_huge_max_steps_is_refused_at_once(tiny_dirs, tmp_path, command, max_steps, no_hang, no_forward):
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "pair.toml").write_text(f'prompt = "t1 t5"\nmodes = ["isolated", "visible"]\nmodel = "{tiny_dirs["llama"]}"\n'
                                      f"max_steps = {max_steps}\n")
    argv = ["run", str(folder / "pair.toml"), "--out", str(tmp_path / "out")] if command == "run" else ["analyze", str(folder)]
    started = time.perf_counter()
    rc, _, err = run_cli(argv)
    assert_clean_refusal(rc, err, "max_steps", "context")
    assert time.perf_counter() - started < 20


def test_the_python_api_refuses_it_the_same_way(tiny_llama, no_hang, no_forward):
    from tempo_lens import generate

    config = config_from_dict({"prompt": "t1 t5", "max_steps": 10**12})
    with pytest.raises(InvalidInputError, match="context") as from_experiment:
        run_experiment(config, tiny_llama)
    with pytest.raises(InvalidInputError, match="context") as from_generate:
        generate(tiny_llama, "t1 t5", max_steps=10**12)
    assert str(from_experiment.value) == str(from_generate.value), "two rules for one setting"


@pytest.mark.parametrize("settings", [
    {"max_steps": 1, "max_parallel": 1},
    {"max_steps": 7, "max_parallel": 3},
    {"max_steps": 9, "max_parallel": 4, "capture": {"steps": [0, 3, 8], "layers": [0, 2]}},
    {"max_steps": 5, "max_parallel": 2, "capture": {"steps": [4]}},
    {"max_steps": 12, "max_parallel": 5, "modes": ["isolated", "visible"], "controls": ["toggled_mask"]},
])
def test_the_attention_estimate_equals_the_sum_over_steps(settings):
    """The closed form against the sum it replaces, written out step by step."""
    config = config_from_dict({"prompt": "t1", **settings})
    n_layers, n_heads, prompt, n_prompts = 3, 4, 11, 2
    capture = config.generation.capture
    layers = len(capture.layers_for(n_layers)) if capture is not None else n_layers
    steps = [s for s in range(config.generation.max_steps) if capture is None or capture.wants_step(s)]
    width = config.generation.max_parallel
    per_run = sum(layers * n_heads * width * (prompt + (s + 1) * width) * 4 for s in steps)
    runs = n_prompts * len(config.modes) * (1 + len(config.controls))
    assert attention_bytes(config, n_layers, n_heads, prompt, n_prompts) == per_run * runs


def test_the_estimate_of_a_huge_max_steps_costs_nothing(no_hang):
    config = config_from_dict({"prompt": "t1", "max_steps": 10**12})
    started = time.perf_counter()
    assert attention_bytes(config, 30, 9, 20, 1) > 10**24
    assert time.perf_counter() - started < 1


def test_a_config_refusal_names_the_file_and_the_table(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('prompt = "t1"\n[capture]\nsteps = [0, 0]\n')
    from tempo_lens.experiment import load_config

    with pytest.raises(ConfigError, match=r"c\.toml.*capture.steps.*more than once"):
        load_config(path)
