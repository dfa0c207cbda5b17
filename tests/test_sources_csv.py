"""Tests for `forecaster.sources.csv.read_series_csv` and `forecaster.sources.base`.

Every bad input must end in one `BadInputError` line with the exact text users see; every good
file must come out on a regular UTC grid with missing periods as NaN.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.sources.base import MIN_POINTS, infer_freq, repeated_by_clock_change, to_kpi_series
from forecaster.sources.csv import read_series_csv
from forecaster.types import BadInputError, KPISeries

EXAMPLES = Path(__file__).resolve().parent / "fixtures" / "prophet-examples"  # shipped, MIT: see its README


def _write(tmp_path: Path, text: str | bytes, name: str = "data.csv") -> Path:
    """Write `text` byte-for-byte (no newline translation) and return the path."""
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _daily(n: int, start: str = "2024-01-01", header: str = "timestamp,value") -> str:
    """A CSV of `n` daily rows with values 1..n."""
    days = pd.date_range(start, periods=n, freq="D")
    return header + "\n" + "".join(f"{d:%Y-%m-%d},{i + 1}\n" for i, d in enumerate(days))


def _rows(stamps: list[str], header: str = "timestamp,value", sep: str = ",",
          newline: str = "\n") -> str:
    """A CSV with one row per stamp, values 1..n."""
    lines = [header] + [f"{s}{sep}{i + 1}" for i, s in enumerate(stamps)]
    return newline.join(lines) + newline


# --------------------------------------------------------------------------- bad files

TEN = _daily(10)
TEN_LINES = TEN.splitlines()

BAD_CASES = [
    pytest.param("", {}, "{p}: empty file; give a header line (e.g. timestamp,value) and one "
                 "row per period", id="empty"),
    pytest.param("\ufeff\n  \n", {}, "{p}: empty file; give a header line (e.g. "
                 "timestamp,value) and one row per period", id="bom-and-blank-lines-only"),
    pytest.param(_daily(10, header="ds,y"), {"timestamp_col": "ts", "value_col": "y"},
                 "{p}: no column 'ts'; columns are: ds, y. Use --timestamp-col/--value-col",
                 id="no-timestamp-column"),
    pytest.param(_daily(10, header="ds,y"), {},
                 "{p}: no columns 'timestamp' and 'value'; columns are: ds, y. "
                 "Use --timestamp-col/--value-col", id="default-columns-missing"),
    pytest.param("\n".join(TEN_LINES[:3] + ["2024-01-0x,3"] + TEN_LINES[4:]), {},
                 "{p}: line 4: cannot parse timestamp '2024-01-0x' in column 'timestamp'; "
                 "use a date like 2024-01-31 or 2024-01-31T13:00:00Z", id="bad-date"),
    pytest.param("\n".join(TEN_LINES[:3] + ["Jan,3"] + TEN_LINES[4:]), {},
                 "{p}: line 4: cannot parse timestamp 'Jan' in column 'timestamp'; "
                 "use a date like 2024-01-31 or 2024-01-31T13:00:00Z", id="month-name-date"),
    pytest.param("\n".join(TEN_LINES[:2] + [",3"] + TEN_LINES[3:]), {},
                 "{p}: line 3: empty timestamp in column 'timestamp'; fill it in or delete "
                 "the row", id="empty-timestamp"),
    pytest.param("\n".join(TEN_LINES[:4] + ["2024-01-04,abc"] + TEN_LINES[5:]), {},
                 "{p}: line 5: column 'value' has 'abc', not a number; give a number with '.' "
                 "as the decimal point, or leave the cell empty for a missing value",
                 id="text-in-number-column"),
    pytest.param("\n".join(TEN_LINES[:1] + ["", ""] + TEN_LINES[1:3] + ["2024-01-03,n0pe"]
                           + TEN_LINES[4:]), {},
                 "{p}: line 6: column 'value' has 'n0pe', not a number; give a number with "
                 "'.' as the decimal point, or leave the cell empty for a missing value",
                 id="line-numbers-count-blank-lines"),
    pytest.param("\n".join(TEN_LINES[:4] + ["2024-01-04,inf"] + TEN_LINES[5:]), {},
                 "{p}: line 5: column 'value' has 'inf', not a number; give a number with '.' "
                 "as the decimal point, or leave the cell empty for a missing value",
                 id="infinite-value"),
    pytest.param("\n".join(TEN_LINES[:4] + ["2024-01-04,1e400"] + TEN_LINES[5:]), {},
                 "{p}: line 5: column 'value' has '1e400', not a number; give a number with '.' "
                 "as the decimal point, or leave the cell empty for a missing value",
                 id="overflowing-value"),
    pytest.param("timestamp;value\n2024-01-01;1,5\n", {},
                 "{p}: line 2: column 'value' has '1,5', not a number; write it as 1.5: '.' as the "
                 "decimal point, in every row", id="decimal-comma"),
    pytest.param("timestamp,value\n2024-01-01,1,234\n", {},
                 "{p}: line 2 has 3 cells but the header has 2; give one cell per column and "
                 "quote values that contain the separator ','", id="unquoted-separator"),
    pytest.param("timestamp,value,note\n2024-01-01,1\n", {},
                 "{p}: line 2 has 2 cells but the header has 3; give one cell per column and "
                 "quote values that contain the separator ','", id="short-row"),
    pytest.param("timestamp,value,value\n2024-01-01,1,2\n", {},
                 "{p}: column 'value' appears 2 times in the header; rename all but one",
                 id="duplicate-column"),
    # Duplicates name the file's lines: the one repeating and the one repeated.
    pytest.param("timestamp,value\n2025-01-01,1\n2025-01-02,2\n2025-01-02,2\n2025-01-03,3\n", {},
                 "{p}, column 'value': line 4 repeats the timestamp 2025-01-02 of line 3; keep one "
                 "row per period or aggregate them first", id="duplicate"),
    pytest.param(TEN + "2024-01-03,7\n2024-01-03,8\n2024-01-05,9\n", {},
                 "{p}, column 'value': 3 duplicate timestamps (lines 12, 13, 14); line 12 repeats "
                 "the timestamp 2024-01-03 of line 4; keep one row per period or aggregate them "
                 "first", id="duplicates"),
    pytest.param(TEN + TEN.split("\n", 1)[1], {},
                 "{p}, column 'value': 10 duplicate timestamps (lines 12, 13, 14, 15, 16, ...); "
                 "line 12 repeats the timestamp 2024-01-01 of line 2; keep one row per period or "
                 "aggregate them first", id="many-duplicates"),
    pytest.param(TEN + "2024-01-03T00:00:00Z,7\n", {},
                 "{p}, column 'value': line 12 repeats the timestamp 2024-01-03 of line 4 (written "
                 "2024-01-03T00:00:00Z); keep one row per period or aggregate them first",
                 id="duplicate-spelled-differently"),
    # Naive local times written across the end of DST repeat an hour: a hint, not "aggregate".
    pytest.param(_rows([f"2025-10-26 {h:02d}:00" for h in (0, 1, 2, 2, 3, 4, 5, 6, 7, 8)]), {},
                 "{p}, column 'value': line 5 repeats the timestamp 2025-10-26 02:00 of line 4; "
                 "these look like local times repeated by a clock change: write UTC times or add "
                 "the UTC offset (e.g. 2025-10-26T02:00:00+01:00)", id="dst-end-europe"),
    pytest.param(_rows([f"2025-11-02T{h:02d}:{m:02d}:00" for h in (0, 1) for m in (0, 15, 30, 45)]
                       + [f"2025-11-02T01:{m:02d}:00" for m in (0, 15, 30, 45)]
                       + ["2025-11-02T02:00:00"]), {},
                 "{p}, column 'value': 4 duplicate timestamps (lines 10, 11, 12, 13); line 10 "
                 "repeats the timestamp 2025-11-02T01:00:00 of line 6; these look like local times "
                 "repeated by a clock change: write UTC times or add the UTC offset (e.g. "
                 "2025-11-02T01:00:00-05:00)", id="dst-end-us-quarter-hours"),
    # No hint for daily data (2025-10-26 is a Sunday, but a day is not a repeated hour) ...
    pytest.param(_rows([f"2025-10-{d}" for d in range(20, 29)] + ["2025-10-26"]), {},
                 "{p}, column 'value': line 11 repeats the timestamp 2025-10-26 of line 8; keep one "
                 "row per period or aggregate them first", id="daily-duplicate-on-dst-sunday"),
    # ... nor for an hour that no clock change repeats (the Saturday before).
    pytest.param(_rows([f"2025-10-25 {h:02d}:00" for h in (0, 1, 2, 2, 3, 4, 5, 6, 7, 8)]), {},
                 "{p}, column 'value': line 5 repeats the timestamp 2025-10-25 02:00 of line 4; "
                 "keep one row per period or aggregate them first", id="hourly-duplicate-not-dst"),
    # Number conventions are never guessed: the cell and its plain spelling are named.
    pytest.param("timestamp;value\n2024-01-01;1.5\n2024-01-02;1,5\n", {},
                 "{p}: line 3: column 'value' has '1,5', not a number; write it as 1.5: '.' as the "
                 "decimal point, in every row", id="decimal-point-and-comma-mixed"),
    pytest.param('timestamp,value\n2024-01-01,1234.5\n2024-01-02,"1,234.5"\n', {},
                 "{p}: line 3: column 'value' has '1,234.5', not a number; write it as 1234.5: no "
                 "thousands separators, '.' as the decimal point", id="thousands-comma"),
    pytest.param("timestamp;value\n2024-01-01;1.234,5\n", {},
                 "{p}: line 2: column 'value' has '1.234,5', not a number; write it as 1234.5: no "
                 "thousands separators, '.' as the decimal point", id="thousands-dot-decimal-comma"),
    pytest.param("timestamp;value\n2024-01-01;1 234\n", {},
                 "{p}: line 2: column 'value' has '1 234', not a number; write it as 1234: no "
                 "thousands separators, '.' as the decimal point", id="thousands-space"),
    pytest.param("timestamp;value\n2024-01-01;987\n2024-01-02;1,234\n", {},
                 "{p}: line 3: column 'value' has '1,234', not a number; write 1234 if ',' separates "
                 "thousands or 1.234 if it is the decimal point", id="comma-thousands-or-decimal"),
    # '.' as a thousands separator parses, so a ';' file mixing 987 and 1.234 is refused: read as
    # written they would be a thousand times apart.
    pytest.param("timestamp;value\n2024-01-01;987\n2024-01-02;1.234\n2024-01-03;\n", {},
                 "{p}: line 3: column 'value' has '1.234' but line 2 has '987': if '.' separates "
                 "thousands, write 1234 (no thousands separators); if it is the decimal point, "
                 "write 987.0", id="dot-thousands-next-to-whole-numbers"),
    pytest.param("timestamp\tvalue\n2024-01-01\t12.345.678\n", {},
                 "{p}: line 2: column 'value' has '12.345.678', not a number; write it as 12345678: "
                 "no thousands separators, '.' as the decimal point", id="dot-thousands-tab"),
    pytest.param(_daily(3), {}, "{p}, column 'value': needs at least 8 values, got 3; give "
                 "more history", id="too-few"),
    pytest.param("timestamp,value\n", {}, "{p}, column 'value': needs at least 8 values, got "
                 "0; give more history", id="header-only"),
    pytest.param("timestamp,value\n" + "".join(f"2024-01-{d:02d},{'' if d % 2 else d}\n"
                                               for d in range(1, 15)), {},
                 "{p}, column 'value': needs at least 8 values, got 7; give more history",
                 id="too-few-after-missing"),
    pytest.param("timestamp,value\n" + "".join(f"2024-01-{d:02d},1\n"
                                               for d in (1, 2, 4, 7, 11, 16, 22, 29, 30)), {},
                 "{p}, column 'value': timestamps are not evenly spaced (the most common "
                 "spacing, 1 day, covers only 2 of 8 gaps); give a regular series",
                 id="irregular"),
    pytest.param("timestamp,value\n" + "".join(f"2024-01-01T{h:02d}:00,1\n"
                                               for h in (0, 1, 2, 3, 4, 5, 6, 7)) +
                 "2024-01-01T07:30,1\n", {},
                 "{p}, column 'value': timestamps are not evenly spaced (30 min between "
                 "2024-01-01 07:00:00+00:00 and 2024-01-01 07:30:00+00:00 is not a multiple of "
                 "the usual 1 h); give a regular series", id="off-step"),
    pytest.param(b"timestamp,value\ncaf\xe9,1\n", {},
                 "{p}: not UTF-8 text (byte 0xe9 at offset 19); save the file as UTF-8",
                 id="not-utf8"),
]


@pytest.mark.parametrize(("content", "kwargs", "message"), BAD_CASES)
def test_bad_file_gives_one_exact_line(
    tmp_path: Path, content: str | bytes, kwargs: dict[str, str], message: str
) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(BadInputError) as caught:
        read_series_csv(path, **kwargs)
    text = str(caught.value)
    assert text == message.format(p=path)
    assert "\n" not in text


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(BadInputError, match=rf"^{re.escape(str(path))}: no such file$"):
        read_series_csv(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r": is a directory, not a CSV file$"):
        read_series_csv(tmp_path)


def test_path_is_reported_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, _daily(10, header="ds,y"))
    with pytest.raises(BadInputError) as caught:
        read_series_csv("data.csv", timestamp_col="ts", value_col="y")
    assert str(caught.value) == (
        "data.csv: no column 'ts'; columns are: ds, y. Use --timestamp-col/--value-col"
    )


# --------------------------------------------------------------------------- good files


def _utc(*stamps: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(s, tz="UTC") for s in stamps]


DAYS_WITH_GAP = [f"2024-01-{d:02d}" for d in range(1, 13) if d not in (5, 6)]
HOURS = [f"2024-03-01T{h:02d}:00:00" for h in range(12)]
FIVE_MIN = [f"2024-03-01 10:{m:02d}" for m in range(0, 60, 5)]
MONTH_STARTS = [f"2023-{m:02d}-01" for m in range(1, 13)]
MONTH_ENDS = [d.strftime("%Y-%m-%d") for d in pd.date_range("2023-01-31", periods=10, freq="ME")]
DAYS_PAST_12 = [d for d in pd.date_range("2024-01-01", periods=20, freq="D") if d.day not in (5, 6)]
MONDAYS = [d.strftime("%Y-%m-%d") for d in pd.date_range("2024-01-01", periods=9, freq="7D")]

GOOD_CASES = [
    # id, content, kwargs, freq, length, first timestamp, positions that must be NaN
    pytest.param(_rows(DAYS_WITH_GAP), {}, "D", 12, "2024-01-01", [4, 5], id="daily-gap"),
    pytest.param(_rows(HOURS), {}, "h", 12, "2024-03-01T00:00", [], id="hourly"),
    pytest.param(_rows(FIVE_MIN), {}, "5min", 12, "2024-03-01T10:00", [], id="5-minute"),
    pytest.param(_rows(MONTH_STARTS[:4] + MONTH_STARTS[6:]), {}, "MS", 12, "2023-01-01",
                 [4, 5], id="monthly-starts-gap"),
    pytest.param(_rows(MONTH_ENDS), {}, "ME", 10, "2023-01-31", [], id="month-ends"),
    pytest.param(_rows(MONDAYS), {}, "W-MON", 9, "2024-01-01", [], id="weekly-mondays"),
    # Local midnights are days: read as their dates (in UTC they were 23:00 the day before).
    pytest.param(_rows([f"{d}T00:00:00+01:00" for d in DAYS_WITH_GAP]), {}, "D", 12,
                 "2024-01-01", [4, 5], id="tz-aware-offset"),
    pytest.param(_rows([f"{d}T00:00:00Z" for d in DAYS_WITH_GAP]), {}, "D", 12,
                 "2024-01-01", [4, 5], id="tz-aware-utc"),
    pytest.param(_rows(DAYS_WITH_GAP, newline="\r"), {}, "D", 12, "2024-01-01", [4, 5],
                 id="old-mac-cr"),
    pytest.param(_rows(DAYS_WITH_GAP, newline="\r\n"), {}, "D", 12, "2024-01-01", [4, 5],
                 id="windows-crlf"),
    pytest.param("\ufeff" + _rows(DAYS_WITH_GAP, header="Datum;Umsatz", sep=";"),
                 {"timestamp_col": "Datum", "value_col": "Umsatz"}, "D", 12, "2024-01-01",
                 [4, 5], id="bom-semicolon"),
    pytest.param(_rows(DAYS_WITH_GAP, header="ds\ty", sep="\t"),
                 {"timestamp_col": "ds", "value_col": "y"}, "D", 12, "2024-01-01", [4, 5],
                 id="tab"),
    pytest.param('"ds", "y"\n' + "".join(f'"{d}", "{i}"\n' for i, d in enumerate(DAYS_WITH_GAP)),
                 {"timestamp_col": "ds", "value_col": "y"}, "D", 12, "2024-01-01", [4, 5],
                 id="quoted-with-spaces"),
    pytest.param("timestamp,value,note\n" + "".join(
        f"2024-01-{d:02d},{v},x\n" for d, v in zip(range(1, 13), ["1", "", "NA", "4", "nan",
                                                               "6", "7", "8", "9", "10", "11",
                                                               "12"])) + ",,\n\n", {},
                 "D", 12, "2024-01-01", [1, 2, 4], id="empty-and-na-values-trailing-blank-row"),
    # Day-first dates are read with one format for the whole file, never guessed per cell
    # (01/02 and 13/02 in one file must not become January 2nd and February 13th).
    pytest.param(_rows([f"{d:%d/%m/%Y}" for d in DAYS_PAST_12]), {}, "D", 20,
                 "2024-01-01", [4, 5], id="day-first-slashes"),
    pytest.param(_rows([f"{d:%m/%d/%Y} 13:00" for d in DAYS_PAST_12]), {}, "D",
                 20, "2024-01-01T13:00", [4, 5], id="month-first-slashes"),
    pytest.param(_rows([f"{d:%d.%m.%Y}" for d in DAYS_PAST_12], header="timestamp,value,,"),
                 {}, "D", 20, "2024-01-01", [4, 5], id="dotted-dates-stray-header-commas"),
    # All days <= 12: day-first reading is a full monthly series, month-first a sparse daily one.
    pytest.param(_rows([f"01/{m:02d}/{y}" for y in (2023, 2024) for m in range(1, 13)]), {},
                 "MS", 24, "2023-01-01", [], id="ambiguous-day-first-monthly"),
    pytest.param(_rows([f"{m:02d}/01/{y}" for y in (2023, 2024) for m in range(1, 13)]), {},
                 "MS", 24, "2023-01-01", [], id="ambiguous-month-first-monthly"),
]


@pytest.mark.parametrize(("content", "kwargs", "freq", "length", "first", "nan_at"), GOOD_CASES)
def test_good_file(
    tmp_path: Path, content: str, kwargs: dict[str, str], freq: str, length: int, first: str,
    nan_at: list[int],
) -> None:
    series = read_series_csv(_write(tmp_path, content), **kwargs)
    values = series.values
    assert series.freq == freq
    assert len(values) == length
    assert values.index[0] == pd.Timestamp(first, tz="UTC")
    assert str(values.index.tz) == "UTC"
    assert values.index.equals(pd.date_range(values.index[0], periods=length, freq=freq))
    assert values.dtype == np.float64
    assert list(np.flatnonzero(values.isna().to_numpy())) == nan_at


def test_unclosed_quote_is_reported_short(tmp_path: Path) -> None:
    content = 'timestamp,value\n2024-01-01,"1\n' + "".join(
        f"2024-01-{d:02d},{d}\n" for d in range(2, 20)
    )
    with pytest.raises(BadInputError) as caught:
        read_series_csv(_write(tmp_path, content))
    assert str(caught.value).startswith(
        f"{tmp_path / 'data.csv'}: line 2: column 'value' has '1\\n2024-01-02,2\\n2024-01-03,3"
        "\\n2024-01-0...', not a number;"
    )


def test_dot_grouped_numbers_are_decimals_when_the_file_shows_it(tmp_path: Path) -> None:
    # "12.5" proves '.' is the decimal point; a ','-separated file cannot use ',' as one unquoted.
    days = [f"2024-01-{d:02d}" for d in range(1, 11)]
    cells = ["987", "1.234", "12.5"] + ["2"] * 7
    semicolon = "timestamp;value\n" + "".join(f"{d};{v}\n" for d, v in zip(days, cells))
    comma = "timestamp,value\n" + "".join(f"{d},{v}\n" for d, v in zip(days, ["987", "1.234"] + ["2"] * 8))
    assert read_series_csv(_write(tmp_path, semicolon, "s.csv")).values.iloc[:3].tolist() == [987.0, 1.234, 12.5]
    assert read_series_csv(_write(tmp_path, comma, "c.csv")).values.iloc[:2].tolist() == [987.0, 1.234]


def test_service_sources_name_the_plain_spelling_too() -> None:
    from forecaster.sources.frames import to_numbers

    with pytest.raises(BadInputError) as caught:
        to_numbers(pd.Series(["1", "2,5"], dtype=object), [2, 3], "sessions", "export.csv", "line")
    assert str(caught.value) == ("export.csv: line 3: column 'sessions' has '2,5', not a number; write it as "
                                 "2.5: '.' as the decimal point, in every row")


@pytest.mark.parametrize(
    ("repeated", "freq", "expected"),
    [
        (["2025-10-26 02:00"], "h", True),  # Europe: last Sunday of October
        (["2025-11-02 01:00", "2025-11-02 01:30"], "30min", True),  # US: first Sunday of November
        (["2025-10-26 02:00", "2025-10-27 02:00"], "h", False),  # one on a Monday
        (["2025-10-26 04:00"], "h", False),  # after 03:59
        (["2025-10-19 02:00"], "h", False),  # a Sunday, but not late October
        (["2025-10-26"], "D", False),  # daily data repeat days, not hours
        ([], "h", False),
    ],
)
def test_repeated_by_clock_change(repeated: list[str], freq: str, expected: bool) -> None:
    stamps = pd.date_range("2025-10-20", "2025-11-08", freq=freq, tz="UTC")
    assert repeated_by_clock_change(pd.DatetimeIndex(repeated, tz="UTC"), stamps) is expected


def test_to_kpi_series_gives_the_clock_change_hint_too() -> None:
    hours = pd.date_range("2025-10-26", periods=10, freq="h", tz="UTC")
    index = hours.insert(3, hours[2])
    with pytest.raises(BadInputError) as caught:
        to_kpi_series("x", pd.Series(np.ones(11), index=index))
    assert str(caught.value) == ("x: 1 duplicate timestamp (first: 2025-10-26 02:00:00+00:00); these look like "
                                 "local times repeated by a clock change: write UTC times or add the UTC offset "
                                 "(e.g. 2025-10-26T02:00:00+01:00)")


def test_naive_and_utc_timestamps_give_the_same_series(tmp_path: Path) -> None:
    naive = read_series_csv(_write(tmp_path, _rows(DAYS_WITH_GAP), "naive.csv"))
    aware = read_series_csv(
        _write(tmp_path, _rows([f"{d}T00:00:00+00:00" for d in DAYS_WITH_GAP]), "aware.csv")
    )
    pd.testing.assert_series_equal(naive.values, aware.values)


def test_a_daily_file_written_in_local_time_reads_as_its_dates_across_dst(tmp_path: Path) -> None:
    # Local midnights: 23 h apart in UTC across the DST change, and each the day before in UTC.
    days = pd.date_range("2025-03-20", periods=20, freq="D", tz="Europe/Amsterdam")
    text = "timestamp,value\n" + "".join(f"{d.isoformat()},{i}\n" for i, d in enumerate(days))
    series = read_series_csv(_write(tmp_path, text))
    assert series.freq == "D"
    assert series.values.index[0] == pd.Timestamp("2025-03-20", tz="UTC")  # not 19 Mar 23:00
    assert series.values["2025-03-30"] == 10.0 and len(series.values) == 20


def test_gap_is_nan_not_zero_and_values_kept(tmp_path: Path) -> None:
    series = read_series_csv(_write(tmp_path, _rows(DAYS_WITH_GAP)))
    assert series.values["2024-01-04"] == 4.0
    assert math.isnan(series.values["2024-01-05"])
    assert series.values["2024-01-07"] == 5.0
    assert (series.values.fillna(-1) != 0).all()


def test_name_defaults_to_value_column(tmp_path: Path) -> None:
    path = _write(tmp_path, _rows(DAYS_WITH_GAP, header="ds,sessions"))
    default = read_series_csv(path, timestamp_col="ds", value_col="sessions")
    named = read_series_csv(path, timestamp_col="ds", value_col="sessions", name="visits")
    assert (default.name, default.values.name) == ("sessions", "sessions")
    assert (named.name, named.values.name) == ("visits", "visits")
    assert named.segment == {} and named.denominator is None


# --------------------------------------------------------------------------- real files


def test_peyton_manning_daily_with_gaps() -> None:
    series = read_series_csv(EXAMPLES / "example_wp_log_peyton_manning.csv", "ds", "y")
    assert series.freq == "D"
    # 2905 rows from 2007-12-10 to 2016-01-20: 2964 days, so 59 missing days become NaN.
    assert len(series.values) == 2964
    assert int(series.values.isna().sum()) == 59
    assert series.values.index[0] == pd.Timestamp("2007-12-10", tz="UTC")
    assert series.values.index[-1] == pd.Timestamp("2016-01-20", tz="UTC")
    assert series.values.iloc[0] == pytest.approx(9.59076113897809)


def test_air_passengers_monthly_with_cr_line_endings() -> None:
    path = EXAMPLES / "example_air_passengers.csv"
    assert b"\r" in path.read_bytes()[:20] and b"\n" not in path.read_bytes()
    series = read_series_csv(path, "ds", "y")
    assert series.freq == "MS"
    assert len(series.values) == 144
    assert not series.values.isna().any()
    assert series.values.iloc[0] == 112.0 and series.values.iloc[-1] == 432.0
    assert series.values.index[-1] == pd.Timestamp("1960-12-01", tz="UTC")


# --------------------------------------------------------------------------- base directly


def _days(n: int, start: str = "2024-01-01", tz: str | None = None) -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="D", tz=tz)


@pytest.mark.parametrize(
    ("stamps", "expected"),
    [
        (pd.date_range("2024-01-01", periods=5, freq="15min"), "15min"),
        (pd.date_range("2024-01-01", periods=5, freq="10min"), "10min"),
        (pd.date_range("2024-01-01", periods=5, freq="30min"), "30min"),
        (pd.date_range("2024-01-01", periods=5, freq="6h"), "6h"),
        (pd.date_range("2024-01-03", periods=5, freq="7D"), "W-WED"),
        (pd.date_range("2024-01-01", periods=5, freq="QS"), "3MS"),
        (pd.date_range("2024-01-01", periods=5, freq="D").delete([2, 3]), "D"),
    ],
)
def test_infer_freq(stamps: pd.DatetimeIndex, expected: str) -> None:
    assert infer_freq(stamps) == expected


def test_infer_freq_needs_two_timestamps() -> None:
    with pytest.raises(BadInputError, match=r"^cannot infer a frequency from 1 timestamp"):
        infer_freq(_days(1))


def test_to_kpi_series_prefix_falls_back_to_name() -> None:
    with pytest.raises(BadInputError) as caught:
        to_kpi_series("sessions", pd.Series([1.0, 2.0, 3.0], index=_days(3)))
    assert str(caught.value) == "sessions: needs at least 8 values, got 3; give more history"


def test_to_kpi_series_converts_timezones_and_sorts() -> None:
    index = _days(10, tz="Asia/Tokyo")[::-1]
    series = to_kpi_series("x", pd.Series(np.arange(10.0), index=index))
    assert str(series.values.index.tz) == "UTC"
    assert series.values.index.is_monotonic_increasing
    assert series.values.iloc[0] == 9.0


def test_to_kpi_series_accepts_constant_and_turns_inf_into_nan() -> None:
    values = pd.Series([5.0] * 9 + [np.inf], index=_days(10))
    series = to_kpi_series("x", values)
    assert series.values.iloc[:9].eq(5.0).all() and math.isnan(series.values.iloc[9])


def test_to_kpi_series_explicit_freq_must_match_the_data() -> None:
    hourly = pd.Series(np.ones(48), index=pd.date_range("2024-01-01", periods=48, freq="h"))
    with pytest.raises(BadInputError, match=r"^x: 46 timestamp\(s\) are off the regular 'D' "
                       r"grid starting 2024-01-01 00:00:00\+00:00 \(first: 2024-01-01 "
                       r"01:00:00\+00:00\); give timestamps at regular steps"):
        to_kpi_series("x", hourly, freq="D")
    with pytest.raises(BadInputError, match=r"^x: unknown frequency 'fortnightly'; use"):
        to_kpi_series("x", hourly, freq="fortnightly")
    assert to_kpi_series("x", hourly, freq="h").freq == "h"


def test_to_kpi_series_rejects_local_midnights_across_dst() -> None:
    local = pd.date_range("2024-03-20", periods=20, freq="D", tz="Europe/Berlin")
    with pytest.raises(BadInputError, match=r"^x: timestamps are not evenly spaced \(23 h "):
        to_kpi_series("x", pd.Series(np.ones(20), index=local))


def test_to_kpi_series_rejects_text_and_non_time_index() -> None:
    with pytest.raises(BadInputError, match=r"^x: 1 value\(s\) are not numbers \(first: 'oops' "
                       r"at 2024-01-03 00:00:00\+00:00\); give numbers, NaN for missing$"):
        to_kpi_series("x", pd.Series([1, 2, "oops"] + [4] * 7, index=_days(10)))
    with pytest.raises(BadInputError, match=r"^x: timestamps are not datetimes \(the index is a "
                       r"RangeIndex\); index the series by time$"):
        to_kpi_series("x", pd.Series(np.ones(10)))


def test_to_kpi_series_aligns_denominator_and_segment() -> None:
    index = _days(12).delete([3])
    values = pd.Series(np.arange(11.0), index=index)
    denominator = pd.Series(np.full(13, 100.0), index=_days(13, start="2023-12-31"))
    series = to_kpi_series("rate", values, segment={"device": "mobile"},
                           denominator=denominator)
    assert series.denominator is not None
    assert series.denominator.index.equals(series.values.index)
    assert (series.denominator == 100.0).all()  # the extra day before the values is dropped
    assert math.isnan(series.values.iloc[3])
    assert series.label == "rate[device=mobile]"


# --------------------------------------------------------------------------- property

values_strategy = st.lists(
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), max_size=40
)


@settings(max_examples=300, deadline=None)
@given(
    values=values_strategy,
    start=st.datetimes(min_value=pd.Timestamp("1950-01-01").to_pydatetime(),
                       max_value=pd.Timestamp("2100-01-01").to_pydatetime()),
    tz=st.sampled_from([None, "UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
    drop=st.sets(st.integers(min_value=0, max_value=39), max_size=10),
)
def test_to_kpi_series_returns_a_regular_series_or_bad_input(
    values: list[float | None], start: pd.Timestamp, tz: str | None, drop: set[int]
) -> None:
    index = pd.date_range(pd.Timestamp(start).floor("D"), periods=len(values), freq="D", tz=tz)
    raw = pd.Series(values, index=index, dtype=object)
    keep = [i for i in range(len(values)) if i not in drop or i in (0, len(values) - 1)]
    raw = raw.iloc[keep]
    try:
        series = to_kpi_series("x", raw)
    except BadInputError:
        finite = pd.to_numeric(raw, errors="coerce").replace([np.inf, -np.inf], np.nan)
        # A UTC/naive daily index with enough real values must never be rejected.
        assert tz not in (None, "UTC") or finite.notna().sum() < MIN_POINTS
        return
    assert isinstance(series, KPISeries)
    grid = series.values.index
    assert str(grid.tz) == "UTC"
    assert grid.equals(pd.date_range(grid[0], grid[-1], freq=series.freq))
    assert series.values.notna().sum() >= MIN_POINTS
    assert not np.isinf(series.values.to_numpy()).any()
    assert series.values.index.is_unique and series.values.index.is_monotonic_increasing


@pytest.mark.parametrize(
    "header,plausible",
    [
        (["timestamp", "sessions"], True),
        (["Conversion rate (%)", "ad cost/EUR", "Sitzungen", "_rows"], True),
        (["SLACK_BOT_TOKEN=xoxb-123-456-abc"], False),
        (["xoxb-1234567890-abcdef"], False),
        (["-----BEGIN PRIVATE KEY-----"], False),
        (["{"], False),
        (["sk_live_51HxyzAbCdEf0123"], False),
        ([], False),
    ],
)
def test_only_a_header_of_column_names_is_ever_named_in_a_message(header, plausible):
    """Issue 17 #13: `path: .env` printed "columns are: SLACK_BOT_TOKEN=xoxb-..."."""
    from forecaster.sources.csv import columns_are, plausible_header

    assert plausible_header(header) is plausible
    shown = columns_are(header)
    assert shown.startswith("columns are: ") is plausible
    if not plausible:
        assert all(cell not in shown for cell in header)


def test_a_dotenv_file_as_series_is_not_echoed(tmp_path):
    env = tmp_path / ".env"
    env.write_text("SLACK_BOT_TOKEN=xoxb-1111-2222-secret\n")
    with pytest.raises(BadInputError) as refused:
        read_series_csv(env)
    assert "does not look like a header" in str(refused.value) and "xoxb" not in str(refused.value)
