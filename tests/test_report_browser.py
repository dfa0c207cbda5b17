"""The demo's report in a real headless Chromium (issue 20): Debian's `chromium` driven by
Playwright for Python, the page opened from disk (file://, no server): the four funnel phases,
the conversion-rate page with its chart and its incident, no console errors, a screenshot.

Skips (with the reason) only when the browser or Playwright cannot be found; `.ci/run` installs
chromium where apt-get can, so CI runs it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from alerts.report.build import build_report
from forecaster.catalog import bundled_config_text
from forecaster.demo import DEMO_NOW
from forecaster.settings import parse_config

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("KPIWATCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _browser_or_skip():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium, or set KPIWATCH_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install 'kpiwatch[dev]')")
    return sync_playwright


def test_demo_report_in_headless_chromium(tmp_path):
    sync_playwright = _browser_or_skip()
    settings = parse_config(bundled_config_text("kpiwatch.yaml"), origin="config/kpiwatch.yaml")
    index = build_report(settings, tmp_path / "report", at=DEMO_NOW)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.on("request", lambda r: problems.append(f"left the disk: {r.url}")
                    if not r.url.startswith(("file://", "data:")) else None)
            page.goto(index.as_uri())
            assert page.locator("h1").all_inner_texts() == ["KPI report"]
            assert page.locator("section.phase h2").all_inner_texts() == ["See", "Think", "Do", "Care"]
            assert page.locator("#phase-do tr[data-kpi]").count() == 4
            page.screenshot(path=str(tmp_path / "index.png"), full_page=True)

            page.get_by_role("link", name="conversion_rate", exact=True).click()
            page.wait_for_load_state()
            assert page.url.endswith("/kpi/conversion_rate.html")
            chart = page.get_by_role("img", name="conversion_rate: history and forecast band")
            assert chart.count() == 1 and chart.is_visible()
            box = chart.bounding_box()
            assert box is not None and box["width"] > 500 and box["height"] > 150
            incident = page.locator("article.incident")
            assert incident.count() == 1
            assert "page_load_time on device=mobile rose" in incident.locator("h3").inner_text()
            assert "conversion_rate on device=mobile fell" in incident.inner_text()
            page.screenshot(path=str(tmp_path / "conversion_rate.png"), full_page=True)

            phone = browser.new_page(viewport={"width": 375, "height": 800}, is_mobile=True)
            phone.goto(index.as_uri())
            # readable on a phone: the page itself does not scroll sideways (tables do, in their box)
            assert phone.evaluate("document.documentElement.scrollWidth") <= 375 + 1
            phone.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert (tmp_path / "index.png").stat().st_size > 10_000 and (tmp_path / "conversion_rate.png").is_file()
