"""The differential harness of issue 28: drawn TEMPO runs on tiny random models against the HF eager oracle.

- :mod:`.models`: the tiny models (one per family, built once per session), their loaded instances and
  oracles, and the backends this environment runs (every name in ``tempo_lens.backends.BACKENDS`` that loads);
- :mod:`.cases`: :class:`~.cases.Case`, one drawn run, and the hypothesis strategy that draws it;
- :mod:`.check`: runs a case with the user's hooks attached and checks every step against the oracle, plus
  the invariants (blocked keys get exactly 0, hooks fire once per forward with one row per token fed,
  the model is unchanged and keeps no hook);
- :mod:`.known`: known, open bugs and the checks each one excuses, until its fix is merged.

Fast tier: ``test_drawn_runs_match_the_oracle`` and ``test_issue_examples`` (``make test``, both venvs).
Long tier: ``make fuzz`` (``FUZZ_SECONDS`` per venv). ``TEMPO_FUZZ_STRICT=1`` excuses nothing;
``TEMPO_FUZZ_BACKENDS=a,b`` picks the backends to draw.
"""
