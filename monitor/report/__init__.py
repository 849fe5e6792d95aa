"""Reports: spend by day, instance and product, idle GPU-hours and their cost, savings realized
by actions, alerts raised and subscription advice over a window of UTC days.

One :class:`~monitor.report.model.Report` is built once from the store (every figure through
:class:`monitor.facts.StoreFacts` and :mod:`monitor.economics`), then rendered as text, JSON or
one self-contained HTML file with inline SVG charts (:mod:`monitor.report.render`). Scheduled
reports (``reports:`` in the configuration) are :mod:`monitor.report.schedule`'s.
"""

from monitor.report.model import Report, build_report
from monitor.report.render import FORMATS, render, to_json

__all__ = ["FORMATS", "Report", "build_report", "render", "to_json"]
