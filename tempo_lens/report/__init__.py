"""The findings report: metrics from experiment files, rendered as FINDINGS.md, report.html and metrics.json."""

from .metrics import ReportInputs, compute_metrics, reference_values

__all__ = ["ReportInputs", "compute_metrics", "reference_values"]
