"""The findings report's numbers: experiments -> a typed :class:`~.schema.Metrics` (``metrics.json``).

- :mod:`.inputs`: which experiments a report is built from (by what they contain);
- :mod:`.compute`: every number of the single-run sections, and :func:`~.compute.compute_metrics`;
- :mod:`.multi`: the multi-prompt and pruning sections' numbers (intervals across prompts);
- :mod:`.measures`: small shared measurements (intervals, per-run means);
- :mod:`.figure_data`: the data behind the report's figures;
- :mod:`.cross_model`: one summary per model of the cross-model study, from each model's ``metrics.json``;
- :mod:`.schema`, :mod:`.codec`: the dataclasses of ``metrics.json`` and their JSON.

May import: the library below analysis (io, errors, layout, capture, experiment) and :mod:`tempo_lens.analysis`;
never figures, report or app. The report renders a ``Metrics`` and computes nothing.
"""
