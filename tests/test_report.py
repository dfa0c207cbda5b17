"""The static report (issue 20): `kpiwatch report` on the demo, its index by funnel phase, a KPI
page, the report without and with a state store, the daemon's read-only /report, and the card
link to a KPI's page (`alerting.report_url`)."""

from __future__ import annotations

import http.client
import re
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from daemon_kit import free_port, frozen, slack_env, write_leads
from fakeslack import FakeSlack

from alerts.daemon import Daemon, report_response
from alerts.grouping import group_alerts
from alerts.incidents import record_and_send
from alerts.message import incident_blocks
from alerts.report import kpi_page
from alerts.slack import make_notifier
from alerts.report.build import build_report, kpi_phase, report_check, write_report
from alerts.store import Store
from forecaster.catalog import bundled_config_text
from forecaster.cli import cli
from forecaster.demo import DEMO_NOW
from forecaster.settings import parse_config

pytestmark = pytest.mark.slow  # one demo check per module (about 10 s)


class Page(HTMLParser):
    """What the tests read of a page: headings in order, links, text, the html lang, svg titles."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.headings: list[tuple[int, str]] = []
        self.links: list[str] = []
        self.svg_titles: list[str] = []
        self.lang = ""
        self.text_parts: list[str] = []
        self._in: list[str] = []
        self._capture: str | None = None
        self._buffer: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.lang = attrs.get("lang", "")
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if re.fullmatch(r"h[1-6]", tag) or (tag == "title" and "svg" in self._in):
            self._capture, self._buffer = tag, []
        self._in.append(tag)

    def handle_endtag(self, tag):
        if tag == self._capture:
            text = " ".join("".join(self._buffer).split())
            if tag == "title":
                self.svg_titles.append(text)
            else:
                self.headings.append((int(tag[1]), text))
            self._capture = None
        if tag in self._in:
            while self._in and self._in.pop() != tag:
                pass

    def handle_data(self, data):
        if self._capture:
            self._buffer.append(data)
        self.text_parts.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.text_parts).split())


@pytest.fixture(scope="module")
def demo():
    settings = parse_config(bundled_config_text("kpiwatch.yaml"), origin="config/kpiwatch.yaml")
    return settings, report_check(settings, at=DEMO_NOW)


@pytest.fixture(scope="module")
def built(demo, tmp_path_factory):
    settings, checked = demo
    out = tmp_path_factory.mktemp("report")
    write_report(settings, checked, out)
    return out


def read(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def test_index_groups_the_kpis_by_funnel_phase_and_links_every_page(demo, built):
    settings, _ = demo
    page = read(built / "index.html")
    assert page.lang == "en"
    assert [h for h in page.headings if h[0] == 1] == [(1, "KPI report")]  # one h1
    assert [text for level, text in page.headings if level == 2] == ["See", "Think", "Do", "Care"]
    levels = [level for level, _ in page.headings]
    assert all(b - a <= 1 for a, b in zip(levels, levels[1:]))  # no heading level skipped
    html = (built / "index.html").read_text()
    # the demo config writes its formulas itself: the phases come from the catalogue by name
    sections = {phase: html.split(f'id="phase-{phase}"')[1].split("</section>")[0] for phase in
                ("see", "think", "do", "care")}
    assert re.findall(r'data-kpi="(\w+)"', sections["see"]) == ["sessions", "page_load_time"]
    assert re.findall(r'data-kpi="(\w+)"', sections["think"]) == ["bounce_rate"]
    assert re.findall(r'data-kpi="(\w+)"', sections["do"]) == ["conversion_rate", "cpa", "roas", "cpc"]
    assert "No KPI of this phase is watched yet" in sections["care"] and "retention_rate" in sections["care"]
    assert sorted(link for link in page.links if link.startswith("kpi/")) == sorted(kpi_page(n) for n in settings.kpis)
    assert all((built / link).is_file() for link in page.links if link.startswith("kpi/"))
    assert page.links[0] == "#main" and '<main id="main"' in html  # the skip link and its target
    assert 'name="viewport"' in html and "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "").replace('xmlns:xlink="http://www.w3.org/1999/xlink"', "")
    # a row: latest value, change against expected, target, chance, a sparkline with its title
    row = sections["do"].split('data-kpi="conversion_rate"')[1].split("</tr>")[0]
    assert "2.13%" in row and "-18.3% (-0.48 points)" in row and "2.70% by Sat 31 Jan 2026" in row
    assert re.search(r"\d+(\.\d)?% \(at risk\)", row) and 'role="img"' in row
    assert "conversion_rate, the last 28 periods" in page.svg_titles


def test_kpi_page_shows_history_incident_segments_and_model(built):
    page = read(built / "kpi" / "conversion_rate.html")
    html = (built / "kpi" / "conversion_rate.html").read_text()
    assert [h for h in page.headings if h[0] == 1] == [(1, "conversion_rate")]
    assert [text for level, text in page.headings if level == 2] == [
        "Latest period", "History and forecast band", "Anomalies and incidents", "Segments", "The model"]
    assert "conversion_rate: history and forecast band" in page.svg_titles
    assert "conversion_rate on device=mobile: history and forecast band" in page.svg_titles  # the alerting segment
    desc = re.search(r'<desc id="chart-conversion-rate-desc">([^<]+)</desc>', html).group(1)
    assert desc.startswith("Line chart of conversion_rate per day from") and "99% band of the last 56" in desc
    # the incident: root cause page_load_time on mobile, this KPI's alert among its members, its hints
    assert "page_load_time on device=mobile rose" in page.text and "Root cause:" in page.text
    assert "conversion_rate on device=mobile fell 42.3%" in page.text
    assert "Where to look" in page.text and "../kpi/page_load_time.html" in page.links
    # the segments table: every segment, the alerted one said so
    mobile = html.split("device=mobile</th>")[1].split("</tr>")[0]
    assert "1.05%" in mobile and "1.82%" in mobile and "yes, alerted" in mobile
    assert html.count("<tr") >= 12  # total, 7 channels, 3 devices, the header
    # the model: which one, its one-step error and the band's coverage, said what they are
    assert re.search(r"ets \(56 periods\)", page.text) and "One-step error (MAPE)" in page.text
    assert re.search(r"\d+ of 56 judged periods inside the band \(\d+%\)", page.text)
    assert "No state store" in page.text  # built without one: said so


def test_report_without_a_store_from_the_cli(tmp_path):
    """`kpiwatch report` on the demo config: no state store exists, none is created."""
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(bundled_config_text("kpiwatch.yaml") + f"\nstate_dir: {tmp_path / 'state'}\n")
    result = CliRunner().invoke(cli, ["report", "--config", str(config), "--at", "2025-12-11T08:00",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "Report written: file://" in result.output
    assert (tmp_path / "out" / "index.html").is_file() and len(list((tmp_path / "out" / "kpi").glob("*.html"))) == 7
    assert not (tmp_path / "state").exists()
    assert "No state store" in (tmp_path / "out" / "kpi" / "cpa.html").read_text()
    result = CliRunner().invoke(cli, ["report", "--config", str(config), "--at", "2025-12-11T08:00",
                                      "--out", str(tmp_path / "nl"), "--locale", "nl"])
    assert result.exit_code == 0, result.output
    assert "Rapport geschreven: file://" in result.output and "7 KPI-pagina's" in result.output
    assert read(tmp_path / "nl" / "index.html").lang == "nl"


def test_report_shows_the_recorded_incidents_and_their_feedback(demo, tmp_path, monkeypatch):
    settings, checked = demo
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        with FakeSlack() as slack, slack_env(monkeypatch, slack):
            record_and_send(checked, settings, store, make_notifier(), DEMO_NOW.to_pydatetime(), deliver_now=False)
        [group] = [g for g in store.groups() if g.root_kpi == "page_load_time" and g.root_segment == "device=mobile"]
        store.record_verdict(group, "expected", "ana", "release 4.2", datetime.now(timezone.utc), close=True)
        write_report(settings, checked, tmp_path / "out", store=store)
    finally:
        store.close()
    page = read(tmp_path / "out" / "kpi" / "conversion_rate.html")
    assert "Incidents recorded by the service" in page.text and "No state store" not in page.text
    assert "page_load_time [device=mobile]" in page.text
    assert "closed (marked expected)" in page.text and "expected by ana on" in page.text


def test_report_in_dutch(demo, tmp_path):
    settings, checked = demo
    write_report(settings, checked, tmp_path, locale="nl")
    page = read(tmp_path / "index.html")
    assert page.lang == "nl" and (1, "KPI-rapport") in page.headings
    assert "conversieratio" in page.text and "Nog geen KPI in deze fase" in page.text
    assert "Verloop en prognoseband" in read(tmp_path / "kpi" / "conversion_rate.html").text


def test_kpi_phase_prefers_the_config_then_the_catalogue(demo):
    settings, _ = demo
    kpi = settings.kpi("cpa")
    assert kpi_phase("cpa", kpi) == "do"
    assert kpi_phase("cpa", kpi.model_copy(update={"phase": "care"})) == "care"
    assert kpi_phase("my_own_kpi", kpi) is None


@pytest.mark.parametrize("path", [
    "/report/../state.db", "/report/%2e%2e/state.db", "/report/kpi/..%2f..%2fstate.db", "/report/kpi/%2e%2e/../state.db",
    "/report/..%5cstate.db", "/report//etc/passwd", "/report/.index.html.tmp", "/report/kpi/x.html%00.html",
    "/report/state.db", "/report/link.html",
])
def test_report_route_refuses_paths_outside_the_report(tmp_path, path):
    (tmp_path / "state.db").write_text("secret")
    folder = tmp_path / "report"
    (folder / "kpi").mkdir(parents=True)
    (folder / "index.html").write_text("<!DOCTYPE html><title>r</title>")
    (folder / "state.db").write_text("not a report file")  # a type the report never has
    (folder / "link.html").symlink_to(tmp_path / "state.db")  # a symlink out of the folder
    status, body, _, _ = report_response(folder, path)
    assert status == 404 and b"secret" not in body


def test_report_route_serves_pages_and_redirects(tmp_path):
    folder = tmp_path / "report"
    assert report_response(folder, "/report/")[0] == 503  # not built yet
    (folder / "kpi").mkdir(parents=True)
    (folder / "index.html").write_text("index")
    (folder / "kpi" / "cpa.html").write_text("cpa page")
    assert report_response(folder, "/report")[:1] == (301,) and report_response(folder, "/report")[3] == {
        "Location": "/report/"}
    status, body, ctype, headers = report_response(folder, "/report/?x=1")
    assert (status, body, ctype) == (200, b"index", "text/html; charset=utf-8")
    assert "script-src" not in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    assert report_response(folder, "/report/kpi/cpa.html")[1] == b"cpa page"


CONFIG = """
timezone: UTC
state: sqlite:///{state}
state_dir: {state_dir}
sources: {{files: {{type: csv, path: "{path}", timestamp: day}}}}
alerting:
  routes: [{{channel: "#kpi-alerts"}}]
  report_url: "https://kpiwatch.example.com/report/"
daemon: {{health_port: {port}, log_format: json}}
kpis:
  leads: {{metric: leads, source: files, model: ets, phase: do}}
  signups: {{metric: signups, source: files, model: ets}}
"""


def test_daemon_builds_and_serves_the_report_read_only_and_cards_link_to_it(tmp_path, monkeypatch):
    data = tmp_path / "export.csv"
    write_leads(data, "2025-01-01", "2025-12-04", columns=("leads", "signups"), drop_from="2025-12-04")
    port = free_port()
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state.db", state_dir=tmp_path / "state", path=data, port=port))
    with FakeSlack() as slack, slack_env(monkeypatch, slack, frozen("2025-12-05T06:00:00Z")):
        daemon = Daemon(config)
        assert daemon.run(once=True) == 0
    folder = tmp_path / "state" / "report"
    index = read(folder / "index.html")
    assert [text for level, text in index.headings if level == 2] == ["See", "Think", "Do", "Care", "Without a phase"]
    leads = read(folder / "kpi" / "leads.html")
    assert "leads fell" in leads.text and "Alert (1)" in leads.text
    # the card links to the root KPI's page under report_url (its trailing slash dropped)
    cards = [m for m in slack.messages("C0ALERTS") if not m["thread_ts"]]
    assert cards and all("<https://kpiwatch.example.com/report/kpi/" in str(m["blocks"]) for m in cards)
    # served on the health port, GET only, nothing outside the folder
    daemon._start_health()
    try:
        assert _get(port, "/report")[:2] == (301, b"")
        status, body = _get(port, "/report/")
        assert status == 200 and b"<h1>KPI report</h1>" in body
        assert _get(port, "/report/kpi/leads.html")[0] == 200
        assert _get(port, "/report/../state.db")[0] == 404 and _get(port, "/report/%2e%2e/state.db")[0] == 404
        assert _get(port, "/report/", "POST")[0] == 405
        assert _get(port, "/healthz")[0] == 200
    finally:
        daemon._stop_health()


def _get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    """A raw request (http.client sends the path as given: no `..` folded away)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=b"" if method == "POST" else None)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_card_links_to_the_report_only_when_report_url_is_set(demo):
    settings, checked = demo
    [group, *_] = group_alerts(checked.alerts, settings)
    plain = incident_blocks(group.members, "t")
    linked = incident_blocks(group.members, "t", report_url="https://k.example.com/report")
    assert len(linked) == len(plain) + 1
    assert f"<https://k.example.com/report/kpi/{group.root.anomaly.kpi}.html|Open in the report>" in str(linked)


def test_report_url_must_be_a_web_address():
    text = bundled_config_text("kpiwatch.yaml").replace("  repeat_hours: 24", "  repeat_hours: 24\n  report_url: kpiwatch/report")
    with pytest.raises(Exception, match="report_url 'kpiwatch/report' is not a web address"):
        parse_config(text)


def test_build_report_runs_one_check(demo, tmp_path, monkeypatch):
    """build_report = one check (widened window) + write_report; the check is not repeated per page."""
    import alerts.report.build as build

    settings, checked = demo
    calls = []
    monkeypatch.setattr(build, "check", lambda *a, **k: calls.append(k) or checked)
    index = build_report(settings, tmp_path, at=DEMO_NOW)
    assert index == tmp_path / "index.html" and len(calls) == 1
