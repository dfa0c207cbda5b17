"""The file source: CSV and Parquet, one file or a glob re-read on every fetch, long or wide.

Expected sums are written by hand or computed in pandas from the rows written; every bad file
ends in one BadInputError line naming the file, the line or row, and the column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecaster.settings import parse_config
from forecaster.sources import make_source
from forecaster.sources.config import CsvSourceConfig, FileSourceConfig, ParquetSourceConfig
from forecaster.sources.files import FileSource
from forecaster.types import BadInputError, SourceError

TZ = "Europe/Amsterdam"
UTC = "UTC"


def _csv(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _source(path: Path | str, kpi_tz: str = UTC, kind: str = "csv", **config: object) -> FileSource:
    model: type[FileSourceConfig] = CsvSourceConfig if kind == "csv" else ParquetSourceConfig
    return FileSource(model.model_validate({"type": kind, "path": str(path), **config}), kpi_tz, "exports")


def _day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


# --------------------------------------------------------------------------- long and wide


LONG = """timestamp,channel,device,sessions,orders
2025-03-01,email,mobile,10,1
2025-03-01,email,desktop,5,
2025-03-01,organic,mobile,7,2
2025-03-02,email,mobile,11,0
2025-03-02,organic,desktop,3,1
"""


def test_long_file_sums_over_dimensions_not_asked_for(tmp_path: Path) -> None:
    source = _source(_csv(tmp_path, LONG))
    got = source.fetch(["sessions", "orders"], ["channel"], "D")
    assert got["timestamp"].tolist() == [_day("2025-03-01"), _day("2025-03-01"), _day("2025-03-02"), _day("2025-03-02")]
    assert got["channel"].tolist() == ["email", "organic", "email", "organic"]
    assert got["sessions"].tolist() == [15.0, 7.0, 11.0, 3.0]
    # An empty cell is missing, not zero; summed with a real value it counts as nothing.
    assert got["orders"].tolist() == [1.0, 2.0, 0.0, 1.0]
    total = source.fetch(["sessions"], [], "D", start=_day("2025-03-02"))
    assert total.to_dict("list") == {"timestamp": [_day("2025-03-02")], "sessions": [14.0]}


def test_wide_file_with_mapped_names_and_missing_period(tmp_path: Path) -> None:
    text = "day;Sessions;Revenue (EUR)\n2025-03-01;100;12.5\n2025-03-02;;\n2025-03-03;120;\"14.25\"\n"
    source = _source(_csv(tmp_path, text), timestamp="day", metrics={"sessions": "Sessions", "revenue": "Revenue (EUR)"})
    got = source.fetch(["sessions", "revenue"], [], "D")
    assert got["sessions"].tolist()[0] == 100.0 and np.isnan(got["sessions"].iloc[1])
    assert got["revenue"].tolist()[2] == 14.25 and np.isnan(got["revenue"].iloc[1])


def test_dates_are_local_days_and_instants_are_cut_in_the_timezone(tmp_path: Path) -> None:
    # Plain dates are taken as the local dates they are; instants are cut at local midnight:
    # 2025-03-01T23:30Z is already March 2nd in Amsterdam.
    dates = _source(_csv(tmp_path, "timestamp,sessions\n2025-03-01,1\n2025-03-02,2\n", "dates.csv"), TZ)
    assert dates.fetch(["sessions"], [], "D")["timestamp"].tolist() == [_day("2025-03-01"), _day("2025-03-02")]
    text = "timestamp,sessions\n2025-03-01T22:30:00Z,1\n2025-03-01T23:30:00Z,2\n2025-03-02T10:00:00+01:00,4\n"
    instants = _source(_csv(tmp_path, text, "instants.csv"), TZ)
    got = instants.fetch(["sessions"], [], "D")
    assert got.to_dict("list") == {"timestamp": [_day("2025-03-01"), _day("2025-03-02")], "sessions": [1.0, 6.0]}
    hourly = instants.fetch(["sessions"], [], "h")
    assert hourly["timestamp"].tolist() == [_day("2025-03-01 22:00"), _day("2025-03-01 23:00"), _day("2025-03-02 09:00")]


def test_a_25_hour_local_day_is_one_day(tmp_path: Path) -> None:
    hours = pd.date_range("2025-10-25 22:00", "2025-10-26 23:00", freq="h", tz="UTC")  # local Oct 26 + edges
    text = "timestamp,sessions\n" + "".join(f"{h.isoformat()},1\n" for h in hours)
    got = _source(_csv(tmp_path, text), TZ).fetch(["sessions"], [], "D")
    assert got.to_dict("list") == {"timestamp": [_day("2025-10-26"), _day("2025-10-27")], "sessions": [25.0, 1.0]}


def test_naive_timestamps_are_read_in_the_configured_zone(tmp_path: Path) -> None:
    path = _csv(tmp_path, "timestamp,sessions\n2025-03-01 00:30,1\n2025-03-01 12:00,2\n")
    as_utc = _source(path, TZ).fetch(["sessions"], [], "h")
    assert as_utc["timestamp"].tolist() == [_day("2025-03-01 00:00"), _day("2025-03-01 12:00")]
    as_local = _source(path, TZ, timezone=TZ).fetch(["sessions"], [], "h")
    assert as_local["timestamp"].tolist() == [_day("2025-02-28 23:00"), _day("2025-03-01 11:00")]


def test_glob_is_re_read_on_every_fetch(tmp_path: Path) -> None:
    _csv(tmp_path, "timestamp,sessions\n2025-03-01,5\n", "exports/day1.csv")
    source = _source(tmp_path / "exports" / "*.csv")
    assert source.fetch(["sessions"], [], "D")["sessions"].tolist() == [5.0]
    _csv(tmp_path, "timestamp,sessions\n2025-03-02,7\n2025-03-01,1\n", "exports/day2.csv")
    got = source.fetch(["sessions"], [], "D")
    assert got.to_dict("list") == {"timestamp": [_day("2025-03-01"), _day("2025-03-02")], "sessions": [6.0, 7.0]}


def test_config_file_to_source(tmp_path: Path) -> None:
    path = _csv(tmp_path, LONG)
    settings = parse_config(f"""
timezone: {TZ}
sources:
  exports: {{type: csv, path: "{path}", delay_hours: 6}}
kpis:
  sessions: {{metric: sessions, source: exports, segments: [device]}}
""")
    source = make_source(settings.sources["exports"], settings.timezone, "exports")
    assert isinstance(source, FileSource) and source.data_delay == pd.Timedelta(hours=6)
    got = source.fetch(["sessions"], ["device"], "D")
    assert got["sessions"].tolist() == [5.0, 17.0, 3.0, 11.0]


# --------------------------------------------------------------------------- parquet


def test_parquet_long_file_with_typed_columns(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({
        "ts": pd.date_range("2025-03-01 22:00", periods=4, freq="h", tz="UTC"),
        "device": ["mobile", "desktop", "mobile", "mobile"],
        "sessions": [1, 2, 3, 4],
        "revenue": [1.5, np.nan, 2.0, 0.25],
    })
    frame.to_parquet(tmp_path / "part-1.parquet")
    frame.assign(sessions=10).to_parquet(tmp_path / "part-2.parquet")
    source = _source(tmp_path / "part-*.parquet", TZ, kind="parquet", timestamp="ts")
    got = source.fetch(["sessions", "revenue"], ["device"], "D")
    assert got["timestamp"].tolist() == [_day("2025-03-01"), _day("2025-03-02"), _day("2025-03-02")]
    assert got["device"].tolist() == ["mobile", "desktop", "mobile"]
    assert got["sessions"].tolist() == [11.0, 12.0, 27.0]
    assert (got["revenue"].iloc[0], got["revenue"].iloc[2]) == (3.0, 4.5)
    assert np.isnan(got["revenue"].iloc[1])  # both files miss it: still missing, not zero


def test_parquet_dates_and_text_numbers(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"day": [pd.Timestamp("2025-03-01").date(), pd.Timestamp("2025-03-02").date()],
                          "clicks": ["12", "n/a"]})
    frame.to_parquet(tmp_path / "d.parquet")
    got = _source(tmp_path / "d.parquet", TZ, kind="parquet", timestamp="day").fetch(["clicks"], [], "D")
    assert got["timestamp"].tolist() == [_day("2025-03-01"), _day("2025-03-02")]
    assert got["clicks"].iloc[0] == 12.0 and np.isnan(got["clicks"].iloc[1])
    frame.assign(clicks=["12", "twelve"]).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(BadInputError) as info:
        _source(tmp_path / "bad.parquet", kind="parquet", timestamp="day").fetch(["clicks"], [], "D")
    assert str(info.value) == (f"source 'exports' (parquet): {tmp_path / 'bad.parquet'}: row 2: column 'clicks' has "
                               "'twelve', not a number; give numbers with '.' as the decimal point (empty for missing)")


def test_not_a_parquet_file(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = _csv(tmp_path, LONG, "x.parquet")
    with pytest.raises(BadInputError, match=r"x\.parquet: not a readable Parquet file \("):
        _source(path, kind="parquet").fetch(["sessions"], [], "D")


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize(("text", "message"), [
    pytest.param(LONG.replace("5,\n", "five,\n"),
                 "{p}: line 3: column 'sessions' has 'five', not a number; give numbers with '.' as the decimal "
                 "point (empty for missing)", id="text-in-number-column"),
    pytest.param(LONG.replace("2025-03-02,organic", "2025-03-3x,organic"),
                 "{p}: line 6: cannot parse timestamp '2025-03-3x' in column 'timestamp'; use ISO 8601 such as "
                 "2024-01-31 or 2024-01-31T13:00:00Z", id="bad-timestamp"),
    pytest.param(LONG.replace("2025-03-02,organic", ",organic"),
                 "{p}: line 6: empty timestamp in column 'timestamp'; fill it in or delete the row", id="empty-timestamp"),
    pytest.param(LONG.replace("sessions,orders", "visits,orders"),
                 "{p}: no column 'sessions'; columns are: timestamp, channel, device, visits, orders. Map the names "
                 "under `metrics:`/`dimensions:` or set `timestamp:`", id="unknown-column"),
    pytest.param("timestamp,sessions\n2025-03-01T10:00Z,1\n2025-03-01T11:00,2\n",
                 "{p}: line 3: timestamp '2025-03-01T11:00' in column 'timestamp' has no UTC offset while others "
                 "do; give every row an offset (e.g. Z) or none", id="mixed-offsets"),
    pytest.param("timestamp,sessions\n2025-03-01,1,9\n",
                 "{p}: line 2 has 3 cells but the header has 2; give one cell per column and quote values that "
                 "contain the separator ','", id="extra-cell"),
])
def test_bad_csv_is_one_line_naming_file_line_and_column(tmp_path: Path, text: str, message: str) -> None:
    path = _csv(tmp_path, text)
    with pytest.raises(BadInputError) as info:
        _source(path).fetch(["sessions"], [], "D")
    assert str(info.value) == message.format(p=f"source 'exports' (csv): {path}")
    assert info.value.exit_code == 2


def test_missing_file_and_empty_glob_are_source_failures(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        _source(tmp_path / "nope.csv").fetch(["sessions"], [], "D")
    assert str(info.value) == f"source 'exports' (csv): no such file '{tmp_path / 'nope.csv'}'; check `path:`"
    assert info.value.exit_code == 3
    with pytest.raises(SourceError, match=r"no file matches '.*\*\.csv'; check `path:`"):
        _source(tmp_path / "*.csv").fetch(["sessions"], [], "D")


def test_hourly_kpi_from_dates_is_refused(tmp_path: Path) -> None:
    source = _source(_csv(tmp_path, "timestamp,sessions\n2025-03-01,1\n2025-03-02,2\n"))
    with pytest.raises(BadInputError, match="dates without a time of day, so an hourly KPI cannot be cut"):
        source.fetch(["sessions"], [], "h")


# --------------------------------------------------------------------------- property


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(st.tuples(st.text(max_size=12), st.text(max_size=8)), min_size=1, max_size=6))
def test_random_cells_give_a_frame_or_one_bad_input_line(tmp_path: Path, cells: list[tuple[str, str]]) -> None:
    lines = "".join(f'"{ts.replace(chr(34), "")}","{value.replace(chr(34), "")}"\n' for ts, value in cells)
    path = tmp_path / "random.csv"
    path.write_text("timestamp,sessions\n" + lines, encoding="utf-8")
    try:
        got = _source(path, TZ).fetch(["sessions"], [], "D")
    except BadInputError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(f"source 'exports' (csv): {path}")
    else:
        assert list(got.columns) == ["timestamp", "sessions"] and got["timestamp"].is_monotonic_increasing


# --------------------------------------------------------------------------- rows (completeness)


def test_rows_counts_the_file_rows_behind_each_sum(tmp_path: Path) -> None:
    source = _source(_csv(tmp_path, LONG))
    by_channel = source.fetch(["orders"], ["channel"], "D", rows=True)
    assert list(by_channel.columns) == ["timestamp", "channel", "orders", "_rows"]
    # 2025-03-01 has two email rows (one with an empty orders cell: the row is still there)
    assert by_channel["_rows"].tolist() == [2.0, 1.0, 1.0, 1.0]
    total = source.fetch(["orders"], [], "D", rows=True)
    assert total["_rows"].tolist() == [3.0, 2.0]
    assert "_rows" not in source.fetch(["orders"], [], "D").columns  # only when asked


def test_rows_are_summed_over_files_and_bounded_like_the_metrics(tmp_path: Path) -> None:
    _csv(tmp_path, "timestamp,leads\n2025-03-01T08:00:00,1\n2025-03-01T09:00:00,2\n", "exports/a.csv")
    _csv(tmp_path, "timestamp,leads\n2025-03-01T10:00:00,3\n2025-03-02T08:00:00,4\n", "exports/b.csv")
    source = _source(tmp_path / "exports" / "*.csv")
    got = source.fetch(["leads"], [], "D", start=_day("2025-03-01"), end=_day("2025-03-01"), rows=True)
    assert got.to_dict("list") == {"timestamp": [_day("2025-03-01")], "leads": [6.0], "_rows": [3.0]}
    none = source.fetch(["leads"], [], "D", start=_day("2025-04-01"), rows=True)
    assert list(none.columns) == ["timestamp", "leads", "_rows"] and none.empty


@pytest.mark.parametrize("cells", [[1.0, np.inf], ["1", "inf"], ["1", "1e400"]], ids=["float", "text", "overflow"])
def test_an_infinite_value_is_bad_input_naming_its_row_not_a_gap(cells: list) -> None:
    from forecaster.sources.frames import to_numbers
    from forecaster.types import BadInputError

    with pytest.raises(BadInputError, match=r"^t: row 3: column 'clicks' has '.*', not a finite number; "):
        to_numbers(cells, [2, 3], "clicks", "t")
    assert list(to_numbers(["1", ""], [2, 3], "clicks", "t")[:1]) == [1.0]  # a missing cell stays missing


# --------------------------------------------------------------------------- pandas' reader


_CELL = st.text(alphabet=" \tab1.-:;,\u00a0", max_size=5)


@st.composite
def _plain_files(draw: st.DrawFn) -> tuple[str, list[str]]:
    """Header and rows, mostly as wide as the header; cells that may hold separators, spaces,
    nothing; blank lines; with or without a last newline."""
    sep = draw(st.sampled_from([",", ";", "\t"]))
    names = draw(st.lists(st.sampled_from(["t", "c", "m", "x", " ", ""]), min_size=1, max_size=4))
    cell = _CELL if draw(st.booleans()) else st.text(alphabet=" ab1.-:", max_size=5)
    rows = draw(st.lists(st.one_of(
        st.lists(cell, min_size=len(names), max_size=len(names)),
        st.lists(cell, max_size=len(names) + 1),
        st.just([]), st.just([" "] * len(names))), max_size=6))
    end = draw(st.sampled_from(["", "\n"]))
    text = sep.join(names) + "\n" + "\n".join(sep.join(cells) for cells in rows) + end
    return text, [n for n in ("t", "m") if n in names] or ["t"]


@settings(max_examples=400, deadline=None)
@given(case=_plain_files())
def test_pandas_split_is_the_careful_split_or_declines(case: tuple[str, list[str]]) -> None:
    """A file pandas splits gives the header, line numbers and cells the line-by-line reader
    gives; a file that reader refuses (or that has no rows) pandas declines."""
    from forecaster.sources.csv import _split_rows
    from forecaster.sources.files import _split_plain

    text, wanted = case
    fast = _split_plain(text, wanted)
    if fast is None:
        return
    header, found = _split_rows(text, "f.csv")  # raises if pandas accepted what it refuses
    assert fast[0] == header
    assert fast[1].tolist() == [line for line, _ in found]
    for col, cells in fast[2].items():
        assert list(np.asarray(cells, dtype=object)) == [row[header.index(col)] for _, row in found]


def test_a_plain_export_is_split_by_pandas_and_read_the_same(tmp_path: Path) -> None:
    from forecaster.sources.files import _split_plain

    text = LONG.replace("2025-03-02,email", "\n,,,,\n2025-03-02,email")  # blank rows keep the line numbers
    assert _split_plain(text, ["timestamp", "sessions"]) is not None
    got = _source(_csv(tmp_path, text)).fetch(["sessions", "orders"], ["channel"], "D")
    assert got["sessions"].tolist() == [15.0, 7.0, 11.0, 3.0] and got["orders"].tolist() == [1.0, 2.0, 0.0, 1.0]
    with pytest.raises(BadInputError, match="line 7: column 'sessions' has 'x'"):
        _source(_csv(tmp_path, text.replace(",11,", ",x,"), "bad.csv")).fetch(["sessions"], [], "D")


# --------------------------------------------------------------------------- one read per file version


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str]]]:
    from forecaster.sources import files

    reads: list[tuple[str, list[str]]] = []
    for name in ("_read_csv", "_read_parquet"):
        real = getattr(files, name)

        def counted(path, wanted, label, real=real):  # noqa: ANN001, ANN202
            reads.append((Path(path).name, list(wanted)))
            return real(path, wanted, label)

        monkeypatch.setattr(files, name, counted)
    return reads


def test_a_file_is_read_once_per_version_by_a_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's job asks its source for the completeness rows, then whether the period has
    a value, then (in the check) for everything: one read of the file; a changed file is read
    again; a new column is read on its own."""
    reads = _count_reads(monkeypatch)
    path = _csv(tmp_path, LONG)
    source = _source(path)
    day = _day("2025-03-02")
    assert source.fetch(["sessions"], [], "D", start=_day("2025-03-01"), end=day, rows=True)["_rows"].tolist() == [3, 2]
    assert source.fetch(["sessions"], [], "D", start=day, end=day)["sessions"].tolist() == [14.0]
    assert source.fetch(["sessions"], [], "D")["sessions"].tolist() == [22.0, 14.0]
    assert reads == [("data.csv", ["timestamp", "sessions"])]
    by_device = source.fetch(["sessions", "orders"], ["device"], "D")
    np.testing.assert_array_equal(by_device["orders"], [np.nan, 3.0, 1.0, 0.0])  # desktop's only cell is empty
    assert reads[1:] == [("data.csv", ["device", "orders"])]  # only what it did not hold
    path.write_text(LONG + "2025-03-03,email,mobile,4,1\n", encoding="utf-8")  # the next export
    assert source.fetch(["sessions"], [], "D")["sessions"].tolist() == [22.0, 14.0, 4.0]
    assert reads[2:] == [("data.csv", ["timestamp", "sessions"])]
    other = _source(path)  # another source object (another job, another process): its own read
    other.fetch(["sessions"], [], "D")
    assert len(reads) == 4


def test_same_size_same_second_rewrite_is_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The version is the modification time in nanoseconds and the size: a file rewritten with
    as many bytes is read again when its time moved at all."""
    import os

    path = _csv(tmp_path, "timestamp,sessions\n2025-03-01,1\n")
    source = _source(path)
    assert source.fetch(["sessions"], [], "D")["sessions"].tolist() == [1.0]
    before = path.stat().st_mtime_ns
    path.write_text("timestamp,sessions\n2025-03-01,2\n", encoding="utf-8")
    os.utime(path, ns=(before + 1, before + 1))
    assert source.fetch(["sessions"], [], "D")["sessions"].tolist() == [2.0]


def test_a_window_gives_the_rows_of_the_whole_file_in_it(tmp_path: Path) -> None:
    days = pd.date_range("2025-01-01", periods=40, freq="D")
    text = "timestamp,campaign,sessions\n" + "".join(
        f"{d:%Y-%m-%d},{c},{i * 3 + j}\n" for i, d in enumerate(days) for j, c in enumerate(("b", "a", "c")) if (i + j) % 7)
    path = _csv(tmp_path, text)
    whole = _source(path).fetch(["sessions"], ["campaign"], "D", rows=True)
    lo, hi = _day("2025-01-20"), _day("2025-01-31")
    window = _source(path).fetch(["sessions"], ["campaign"], "D", start=lo, end=hi, rows=True)
    want = whole[(whole["timestamp"] >= lo) & (whole["timestamp"] <= hi)].reset_index(drop=True)
    pd.testing.assert_frame_equal(window, want)


def test_parquet_is_read_once_per_version_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pyarrow")
    reads = _count_reads(monkeypatch)
    frame = pd.DataFrame({"day": ["2025-03-01", "2025-03-01", "2025-03-02"], "campaign": ["a", "b", "a"],
                          "sessions": [1.0, 2.0, 4.0]})
    frame.to_parquet(tmp_path / "d.parquet")
    source = _source(tmp_path / "d.parquet", kind="parquet", timestamp="day")
    source.fetch(["sessions"], [], "D", rows=True)
    source.fetch(["sessions"], [], "D", start=_day("2025-03-02"), end=_day("2025-03-02"))
    got = source.fetch(["sessions"], ["campaign"], "D")
    assert got["sessions"].tolist() == [1.0, 2.0, 4.0] and got["campaign"].tolist() == ["a", "b", "a"]
    assert reads == [("d.parquet", ["day", "sessions"]), ("d.parquet", ["campaign"])]


def test_a_bad_cell_is_the_same_error_on_every_fetch(tmp_path: Path) -> None:
    source = _source(_csv(tmp_path, LONG.replace("5,\n", "five,\n")))
    messages = set()
    for _ in range(2):
        with pytest.raises(BadInputError) as info:
            source.fetch(["sessions"], [], "D")
        messages.add(str(info.value))
    assert len(messages) == 1 and "line 3: column 'sessions' has 'five'" in messages.pop()
    assert source.fetch(["orders"], [], "D")["orders"].tolist() == [3.0, 1.0]  # the other column is fine
