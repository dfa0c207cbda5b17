"""Google Analytics 4 as a source (`type: ga4`), through the GA4 Data API `runReport`.

One report per fetch: the date (`date` for daily, `dateHour` for hourly KPIs) plus the mapped
dimensions, and the GA4 metrics the requested kpiwatch metrics are made of (a kpiwatch metric may
be a sum or difference of GA4 metrics: bounces = sessions - engagedSessions). Pages of
`page_size` rows are read until `rowCount` rows have arrived.

Periods: GA4 reports dates in the property's time zone, so a daily `date` is labelled as it is
(midnight UTC of that date, the demo's convention); an hourly `dateHour` is converted from the
property's zone (the report's metadata, else the config's timezone) to the UTC hour.

Credentials: the standard Google way (GOOGLE_APPLICATION_CREDENTIALS pointing at a service-account
key file). Quota, permission and network problems -> SourceError (exit 3); a GA4 name it does
not know -> BadInputError (exit 2). Sampled or thresholded reports are kept (GA4 scales sampled
values up) and noted in `notes`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from forecaster.sources import frames
from forecaster.sources.base import WallClock
from forecaster.sources.config import GA4SourceConfig
from forecaster.types import BadInputError, SourceError

log = logging.getLogger(__name__)

# GA4 keeps processing a day's events for 24-48 hours; judging earlier reads a drop.
DEFAULT_DELAY_HOURS = 48.0
# The earliest date the Data API accepts.
_GA4_EPOCH = "2015-08-14"
_REQUEST_PREFIX = re.compile(r"^[A-Z]+ https?://\S+: ")
_TERM = re.compile(r"([-+]?)\s*([A-Za-z][A-Za-z0-9_:]*)")


def parse_expression(expression: str) -> list[tuple[float, str]]:
    """A GA4 metric expression as (sign, GA4 metric) terms: "sessions - engagedSessions" ->
    [(1.0, "sessions"), (-1.0, "engagedSessions")]."""
    return [(-1.0 if sign == "-" else 1.0, name) for sign, name in _TERM.findall(expression)]


class GA4Source(WallClock):
    """Metrics of a GA4 property, summed per period and dimension values.

    config: the `sources:` entry (see `forecaster.sources.config.GA4SourceConfig`).
    timezone: the config's timezone (used for the date range asked and as the property's zone
        when a report does not say it).
    name: the entry's name under `sources:`, for messages.
    client: a `BetaAnalyticsDataClient` to use (tests pass one with a fake transport); default
        None = one created on first fetch from the standard Google credentials.
    """

    def __init__(self, config: GA4SourceConfig, timezone: str = "UTC", name: str = "", client: Any = None) -> None:
        self.config = config
        self.timezone = timezone
        self.name = name or "ga4"
        delay = DEFAULT_DELAY_HOURS if config.delay_hours is None else config.delay_hours
        self.data_delay = pd.Timedelta(hours=delay)
        self.property = config.property_id if config.property_id.startswith("properties/") else (
            f"properties/{config.property_id}")
        self.notes: list[str] = []  # what the last fetch learned about its data (sampling, thresholds)
        self._client = client

    @property
    def where(self) -> str:
        """How messages name this source."""
        return f"source {self.name!r} (ga4 {self.property})"

    def __repr__(self) -> str:
        return f"GA4Source(name={self.name!r}, property={self.property!r})"

    # ----------------------------------------------------------------------- fetch

    def fetch(
        self,
        metrics: Sequence[str],
        dimensions: Sequence[str],
        freq: str,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
        *,
        rows: bool = False,
    ) -> pd.DataFrame:
        """Metrics summed per period label and dimension values, start <= label <= end (labels,
        inclusive; None = from GA4's first date / up to today).

        rows: accepted for the contract; a GA4 report has no raw rows to count, so no `_rows`
        column is returned (its lateness is `delay_hours`)."""
        frames.check_freq(freq, self.where)
        metrics, dimensions = list(dict.fromkeys(metrics)), list(dict.fromkeys(dimensions))
        if not metrics:
            raise BadInputError(f"{self.where}: no metric requested")
        lo = frames.as_label(start, self.where, "start")
        hi = frames.as_label(end, self.where, "end")
        terms = {m: parse_expression(self.config.metrics.get(m, m)) for m in metrics}
        ga4_metrics = list(dict.fromkeys(name for parts in terms.values() for _, name in parts))
        ga4_dims = ["date" if freq == "D" else "dateHour", *(self.config.dimensions.get(d, d) for d in dimensions)]
        header, rows, zone = self._report(ga4_dims, ga4_metrics, *self._date_range(freq, lo, hi))
        if not rows:
            return frames.empty_frame(dimensions, metrics)
        at = {name: i for i, name in enumerate(header)}
        missing = [name for name in (*ga4_dims, *ga4_metrics) if name not in at]
        if missing:
            raise SourceError(f"{self.where}: the report has no column {missing[0]!r} (it has {', '.join(header)})")
        numbers = np.arange(1, len(rows) + 1)
        columns = list(zip(*rows, strict=True))
        labels = self._labels(columns[at[ga4_dims[0]]], freq, zone)
        values = {
            name: frames.to_numbers(list(columns[at[name]]), numbers, name, f"{self.where}: report", "row")
            for name in ga4_metrics
        }
        sums = {m: sum(sign * values[name] for sign, name in parts) for m, parts in terms.items()}
        dims = {d: np.asarray(columns[at[ga4]], dtype=object) for d, ga4 in zip(dimensions, ga4_dims[1:], strict=True)}
        return frames.summed(labels, dims, sums, lo, hi)

    def _date_range(self, freq: str, lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> tuple[str, str]:
        """The GA4 date range (property dates) covering the labels lo..hi; hourly ranges are a
        day wider on each side (the property's zone is only known from the answer)."""
        if freq == "D":
            first = lo.date().isoformat() if lo is not None else _GA4_EPOCH
            last = hi.date().isoformat() if hi is not None else "today"
            return first, last
        widen = timedelta(days=1)
        first = (lo.tz_convert(self.timezone).date() - widen).isoformat() if lo is not None else _GA4_EPOCH
        last = min(hi.tz_convert(self.timezone).date() + widen, date.today()).isoformat() if hi is not None else "today"
        return max(first, _GA4_EPOCH), last

    def _labels(self, values: Sequence[str], freq: str, zone: str) -> pd.DatetimeIndex:
        """Period labels of GA4's `date` (YYYYMMDD) or `dateHour` (YYYYMMDDHH, property time)."""
        fmt = "%Y%m%d" if freq == "D" else "%Y%m%d%H"
        stamps = pd.to_datetime(pd.Index(values, dtype=object), format=fmt, errors="coerce")
        bad = np.flatnonzero(np.asarray(pd.isna(stamps), dtype=bool))
        if len(bad):
            raise BadInputError(f"{self.where}: report row {bad[0] + 1}: GA4 sent {values[bad[0]]!r} as a "
                                f"{'date' if freq == 'D' else 'dateHour'}; expected {fmt}")
        if freq == "D":
            return frames.label_dates(pd.DatetimeIndex(stamps), freq, self.where)
        return frames.label_instants(frames.localize_naive(pd.DatetimeIndex(stamps), zone), freq, self.timezone)

    # ----------------------------------------------------------------------- the API

    def client(self) -> Any:
        """The Data API client: the one given, else one from the standard Google credentials."""
        if self._client is None:
            try:
                from google.analytics.data_v1beta import BetaAnalyticsDataClient
                from google.auth.exceptions import DefaultCredentialsError
            except ImportError:
                raise BadInputError(f"{self.where}: GA4 needs google-analytics-data; "
                                    "pip install 'kpiwatch[ga4]'") from None
            try:
                self._client = BetaAnalyticsDataClient()
            except DefaultCredentialsError as exc:
                raise SourceError(f"{self.where}: no Google credentials ({_one_line(exc)}); set "
                                  "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file") from None
        return self._client

    def _report(
        self, dimensions: list[str], metrics: list[str], first: str, last: str
    ) -> tuple[list[str], list[tuple[str, ...]], str]:
        """The report's column names (dimensions then metrics, from its headers), every row (GA4's
        strings) and the property's time zone, reading page after page."""
        from google.analytics.data_v1beta.types import (
            DateRange,
            Dimension,
            Metric,
            RunReportRequest,
        )

        rows: list[tuple[str, ...]] = []
        header: list[str] = []
        zone = self.timezone
        self.notes = []
        offset = 0
        while True:
            request = RunReportRequest(
                property=self.property,
                dimensions=[Dimension(name=d) for d in dimensions],
                metrics=[Metric(name=m) for m in metrics],
                date_ranges=[DateRange(start_date=first, end_date=last)],
                limit=self.config.page_size,
                offset=offset,
            )
            response = self._run(request)
            zone = response.metadata.time_zone or zone
            header = [h.name for h in response.dimension_headers] + [h.name for h in response.metric_headers]
            self._note(response)
            page = [
                tuple(v.value for v in row.dimension_values) + tuple(v.value for v in row.metric_values)
                for row in response.rows
            ]
            rows.extend(page)
            offset += len(page)
            if not page or offset >= response.row_count:
                return header, rows, zone

    def _run(self, request: Any) -> Any:
        """One runReport call; the API's errors as kpiwatch errors (one line)."""
        from google.api_core import exceptions as api
        from google.auth.exceptions import GoogleAuthError

        try:
            return self.client().run_report(request=request)
        # gRPC and REST name the same failures differently (ResourceExhausted / TooManyRequests).
        except (api.ResourceExhausted, api.TooManyRequests) as exc:
            raise SourceError(f"{self.where}: GA4 quota exhausted ({_one_line(exc)}); wait for the property's "
                              "tokens to refill (hourly and daily) or check fewer KPIs") from None
        except (api.PermissionDenied, api.Unauthenticated, api.Forbidden, api.Unauthorized) as exc:
            raise SourceError(f"{self.where}: no access ({_one_line(exc)}); give the service account in "
                              "GOOGLE_APPLICATION_CREDENTIALS Viewer access to the property") from None
        except (api.InvalidArgument, api.NotFound, api.BadRequest) as exc:
            raise BadInputError(f"{self.where}: GA4 refused the request ({_one_line(exc)}); check `property_id` "
                                "and the GA4 names under `metrics:`/`dimensions:`") from None
        except (api.GoogleAPIError, GoogleAuthError) as exc:
            raise SourceError(f"{self.where}: the GA4 request failed ({_one_line(exc)})") from None

    def _note(self, response: Any) -> None:
        """Remember (and log) what makes this report less than exact."""
        meta = response.metadata
        found: list[str] = []
        for sample in meta.sampling_metadatas:
            share = sample.samples_read_count / sample.sampling_space_size if sample.sampling_space_size else 0.0
            found.append(f"sampled: {share:.1%} of events read (GA4 scaled the values up)")
        if meta.subject_to_thresholding:
            found.append("thresholded: GA4 withheld rows with few users")
        if meta.data_loss_from_other_row:
            found.append("(other) row: some dimension values were merged into '(other)'")
        for note in found:
            if note not in self.notes:
                self.notes.append(note)
                log.warning("%s: %s", self.where, note)


def _one_line(exc: BaseException) -> str:
    """An API error's message on one line."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    # The REST transport prefixes "POST https://...: "; the request is known, the reason matters.
    return " ".join(_REQUEST_PREFIX.sub("", str(text)).split())
