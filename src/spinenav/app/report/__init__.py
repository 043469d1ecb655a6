"""The HTML report of a surgical plan: one self-contained page (figures embedded as PNG data URIs).

>>> from spinenav.app.report import render_plan_report          # doctest: +SKIP
>>> render_plan_report(plan, ct, labels, "out/plan/report.html")  # doctest: +SKIP
"""

from spinenav.app.report.render import (ReportError, plan_report_html, png_data_uri, render_plan_report,
                                        scrub_paths)

__all__ = ["ReportError", "plan_report_html", "png_data_uri", "render_plan_report", "scrub_paths"]
