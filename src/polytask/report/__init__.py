"""One self-contained HTML report of a run folder (`polytask report RUN_DIR`): curves, task
weights, gradient norms, conflict and affinity heatmaps, MTL vs single-task with Δm, model
size and the cost of one model against K. Plots are inline SVG; nothing is fetched."""

from polytask.report._report import REPORT_FILE, Report, build_report, write_report

__all__ = ["REPORT_FILE", "Report", "build_report", "write_report"]
