"""Constants of the report tests (the tiny report itself is built once in tests/conftest.py)."""

from __future__ import annotations

REFERENCE_SECTIONS = [
    "## Executive Summary", "## Key Findings", "### 1. Parallel Tokens Receive", "### 2. Isolation Mode Has",
    "### 3. Layer-Wise Attention Patterns", "### 4. Attention Head Specialization", "## Mechanistic Explanations",
    "## Implications for TEMPO", "## Comparison to Baseline", "## Data Summary",
    "## Beyond the Reference Report", "### 4. Multi-prompt validation", "### 5. Pruned vs surviving tokens",
    "## Comparison with the Reference Report", "### Why Do Parallel Tokens Receive", "## Future Research Directions",
    "## Conclusion",
]
