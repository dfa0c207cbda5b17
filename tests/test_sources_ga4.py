"""The GA4 source without network: the real `BetaAnalyticsDataClient` over its REST transport,
whose HTTP session answers from recorded responses in tests/fixtures/ga4 (GA4's RunReportResponse
JSON, errors in Google's error JSON). So the library's own parsing and its HTTP-status-to-exception
mapping run as they do in production; only the wire is replaced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("google.analytics.data_v1beta")
import requests  # noqa: E402  (comes with google-api-core)
from google.analytics.data_v1beta import BetaAnalyticsDataClient  # noqa: E402
from google.analytics.data_v1beta.services.beta_analytics_data.transports.rest import (  # noqa: E402
    BetaAnalyticsDataRestTransport,
)
from google.auth.credentials import AnonymousCredentials  # noqa: E402

from forecaster.settings import parse_config  # noqa: E402
from forecaster.sources import make_source  # noqa: E402
from forecaster.sources.config import GA4SourceConfig  # noqa: E402
from forecaster.sources.ga4 import GA4Source, parse_expression  # noqa: E402
from forecaster.types import BadInputError, SourceError  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "ga4"
MAPPING = {
    "metrics": {"sessions": "sessions", "bounces": "sessions - engagedSessions", "conversions": "keyEvents",
                "revenue": "totalRevenue"},
    "dimensions": {"channel": "sessionDefaultChannelGroup", "device": "deviceCategory"},
}


class Recorded(requests.adapters.BaseAdapter):
    """A requests adapter answering each call with the next recorded (status, fixture file)."""

    def __init__(self, answers: list[tuple[int, str]]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.bodies: list[dict[str, Any]] = []
        self.urls: list[str] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # noqa: ARG002
        self.urls.append(str(request.url))
        self.bodies.append(json.loads(request.body or b"{}"))
        status, name = self.answers.pop(0)
        response = requests.Response()
        response.status_code = status
        response._content = (FIXTURES / name).read_bytes()
        response.headers["Content-Type"] = "application/json; charset=UTF-8"
        response.encoding = "utf-8"
        response.url = str(request.url)
        response.request = request
        return response

    def close(self) -> None:
        pass


def _source(answers: list[tuple[int, str]], kpi_tz: str = "Europe/Amsterdam", **config: Any) -> tuple[GA4Source, Recorded]:
    transport = BetaAnalyticsDataRestTransport(credentials=AnonymousCredentials())
    wire = Recorded(answers)
    transport._session.mount("https://", wire)  # the transport's HTTP session: the one seam we replace
    client = BetaAnalyticsDataClient(transport=transport)
    model = GA4SourceConfig.model_validate({"type": "ga4", "property_id": "123456789", **MAPPING, **config})
    return GA4Source(model, kpi_tz, "analytics", client=client), wire


def _day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_daily_report_sums_and_metric_parts() -> None:
    source, wire = _source([(200, "report_daily.json")])
    got = source.fetch(["sessions", "bounces", "conversions", "revenue"], ["channel"], "D",
                       start=_day("2025-12-01"), end=_day("2025-12-02"))
    assert got["timestamp"].tolist() == [_day("2025-12-01")] * 2 + [_day("2025-12-02")] * 2
    assert got["channel"].tolist() == ["Email", "Organic Search", "Email", "Organic Search"]
    assert got["sessions"].tolist() == [300.0, 2700.0, 310.0, 2710.0]
    assert got["bounces"].tolist() == [90.0, 1000.0, 95.0, 1015.0]  # sessions - engagedSessions
    assert got["conversions"].tolist() == [12.0, 52.0, 11.0, 49.0]
    assert got["revenue"].tolist() == [816.25, 3536.5, 748.0, 3332.0]
    body = wire.bodies[0]
    assert "/v1beta/properties/123456789:runReport" in wire.urls[0]
    assert [d["name"] for d in body["dimensions"]] == ["date", "sessionDefaultChannelGroup"]
    assert [m["name"] for m in body["metrics"]] == ["sessions", "engagedSessions", "keyEvents", "totalRevenue"]
    assert body["dateRanges"] == [{"startDate": "2025-12-01", "endDate": "2025-12-02"}]
    assert source.notes == [] and source.data_delay == pd.Timedelta(hours=48)


def test_empty_report_gives_the_contract_columns() -> None:
    source, _ = _source([(200, "report_empty.json")])
    got = source.fetch(["sessions"], ["device"], "D")
    assert list(got.columns) == ["timestamp", "device", "sessions"] and got.empty


def test_sampled_report_is_kept_and_noted(caplog: pytest.LogCaptureFixture) -> None:
    source, _ = _source([(200, "report_sampled.json")])
    got = source.fetch(["sessions"], [], "D")
    assert got.to_dict("list") == {"timestamp": [_day("2025-12-01")], "sessions": [3000.0]}
    assert source.notes == ["sampled: 25.0% of events read (GA4 scaled the values up)"]
    assert "sampled: 25.0% of events read" in caplog.text


def test_paging_reads_until_row_count() -> None:
    source, wire = _source([(200, "report_page1.json"), (200, "report_page2.json")], page_size=4)
    got = source.fetch(["sessions"], ["device"], "D")
    assert [(b["offset"] if "offset" in b else "0", b["limit"]) for b in wire.bodies] == [("0", "4"), ("4", "4")]
    assert got["sessions"].tolist() == [1200.0, 1800.0, 1180.0, 1840.0]
    assert wire.answers == []


def test_hourly_date_hours_are_property_time_converted_to_utc() -> None:
    source, wire = _source([(200, "report_hourly.json")])
    got = source.fetch(["sessions"], ["device"], "h", start=_day("2025-11-30 23:00"), end=_day("2025-12-02 21:00"))
    # 2025-12-01 00:00 in Amsterdam (CET, +01:00) is 2025-11-30 23:00 UTC; the row of local
    # 2025-12-02 23:00 (22:00 UTC) lies after `end` and is left out.
    assert got["timestamp"].tolist() == [_day("2025-11-30 23:00")] * 2 + [_day("2025-12-01 00:00")]
    assert got["sessions"].tolist() == [12.0, 40.0, 25.0]
    assert wire.bodies[0]["dimensions"][0] == {"name": "dateHour"}
    assert wire.bodies[0]["dateRanges"] == [{"startDate": "2025-11-30", "endDate": "2025-12-03"}]


def test_text_in_a_metric_names_the_row() -> None:
    source, _ = _source([(200, "report_text_value.json")])
    with pytest.raises(BadInputError) as info:
        source.fetch(["sessions"], [], "h")
    assert str(info.value) == ("source 'analytics' (ga4 properties/123456789): report: row 2: column 'sessions' has "
                               "'n.v.t.', not a number; give numbers with '.' as the decimal point (empty for missing)")


@pytest.mark.parametrize(("status", "fixture", "error", "text"), [
    pytest.param(429, "error_quota.json", SourceError,
                 "source 'analytics' (ga4 properties/123456789): GA4 quota exhausted (Exhausted property tokens per "
                 "hour for a project per property. These quota tokens will return in under an hour.); wait for the "
                 "property's tokens to refill (hourly and daily) or check fewer KPIs", id="quota"),
    pytest.param(403, "error_permission.json", SourceError,
                 "source 'analytics' (ga4 properties/123456789): no access (User does not have sufficient permissions "
                 "for this property.); give the service account in GOOGLE_APPLICATION_CREDENTIALS Viewer access to "
                 "the property", id="permission"),
    pytest.param(400, "error_invalid_metric.json", BadInputError,
                 "source 'analytics' (ga4 properties/123456789): GA4 refused the request (Field sesions is not a valid "
                 "metric.); check `property_id` and the GA4 names under `metrics:`/`dimensions:`", id="invalid-metric"),
])
def test_api_errors_are_one_line(status: int, fixture: str, error: type[Exception], text: str) -> None:
    source, _ = _source([(status, fixture)])
    with pytest.raises(error) as info:
        source.fetch(["sessions"], [], "D")
    assert str(info.value) == text
    assert info.value.exit_code == (3 if error is SourceError else 2)  # type: ignore[attr-defined]


def test_missing_credentials_is_a_source_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-key.json"))
    settings = parse_config("""
sources:
  analytics: {type: ga4, property_id: "123", metrics: {conversions: keyEvents}, delay_hours: 36}
kpis:
  sessions: {metric: sessions, source: analytics}
""")
    source = make_source(settings.sources["analytics"], settings.timezone, "analytics")
    assert isinstance(source, GA4Source) and source.data_delay == pd.Timedelta(hours=36)
    with pytest.raises(SourceError) as info:
        source.fetch(["sessions"], [], "D")
    assert str(info.value).startswith("source 'analytics' (ga4 properties/123): no Google credentials (")
    assert str(info.value).endswith("); set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file")


def test_metric_expressions() -> None:
    assert parse_expression("sessions - engagedSessions") == [(1.0, "sessions"), (-1.0, "engagedSessions")]
    assert parse_expression("purchaseRevenue+adRevenue") == [(1.0, "purchaseRevenue"), (1.0, "adRevenue")]
    with pytest.raises(ValueError, match="is not a metric name or a sum/difference"):
        GA4SourceConfig.model_validate({"type": "ga4", "property_id": "1", "metrics": {"r": "bounces / sessions"}})
    assert np.isfinite(1.0)
