"""Orchestration above the library: ``tempo-lens analyze`` and ``make study`` (config -> runs -> metrics -> report).

- :mod:`.analyze`: ``tempo-lens analyze``: a folder's configs run (or its saved runs read), then the report written;
- :mod:`.study`: ``make study``: the study folder on every installed zoo model, with a time estimate and progress;
- :mod:`.outputs`: what ``analyze`` may write and replace (its manifest).

May import: every package of tempo_lens (it is the top layer, beside :mod:`tempo_lens.cli`); nothing imports it but the CLI.
"""
