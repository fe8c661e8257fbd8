"""Files and processes, below everything else: atomic folders, JSON records, saved arrays, bounded reads, checksums, signals.

- :mod:`.atomic`: folders written atomically, with owned temporaries and backups;
- :mod:`.records`: dataclass records to and from JSON, read with bounds;
- :mod:`.saved_arrays`: the arrays of saved runs (one ``.npy`` per step), memory-mapped or read;
- :mod:`.capped_read`: a small regular file read whole, or a refusal;
- :mod:`.checksums`: sha256 of files;
- :mod:`.signals`: Ctrl-C / SIGTERM handling for the command line and for writes.

May import: :mod:`tempo_lens.errors`, the bottom modules and the standard library (plus numpy); nothing above.
"""
