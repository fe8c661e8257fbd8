#!/usr/bin/env python
"""`make bench`: ``python benchmarks/bench.py [options]`` runs ``python -m benchmarks [options]``."""

import runpy
import sys
from pathlib import Path

# The repository root instead of this folder, so ``benchmarks`` imports as a package and its module
# names cannot shadow the standard library's.
sys.path[0] = str(Path(__file__).resolve().parents[1])
runpy.run_module("benchmarks", run_name="__main__", alter_sys=True)
