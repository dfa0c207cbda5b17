"""The static HTML report (`kpiwatch report`, the daemon's `/report`): one index of the KPIs by
funnel phase and one page per KPI, charts inlined as SVG, no JavaScript, opens from disk.

`alerts.report.build.build_report` writes it from one check (`forecaster.pipeline.check`);
`alerts.report.charts` draws its SVG charts. This module stays import-light (no matplotlib, no
Jinja2): `alerts.message` asks it only for a KPI page's file name.
"""

from __future__ import annotations

import re

REPORT_FOLDER = "report"  # under the config's `state_dir`: what the daemon builds and serves at /report
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def kpi_page(name: str) -> str:
    """A KPI page's path inside the report folder: `kpi/conversion_rate.html` (characters other
    than letters, digits, `_`, `.` and `-` become `_`, so a name never leaves the folder)."""
    slug = _UNSAFE.sub("_", name).lstrip(".") or "_"
    return f"kpi/{slug}.html"
