"""The NAB scorer in benchmarks/nab.py: hand-computed tiny cases, then NAB's published figures.

Expected values are written with tanh, since sigma(x) = 2/(1+exp(5x)) - 1 = -tanh(5x/2): a
second formulation, so a slip in the scorer's sigmoid cannot cancel out in the test.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_nab() -> ModuleType:
    """benchmarks/ is not an installed package: load the module from its file."""
    spec = importlib.util.spec_from_file_location("kpiwatch_bench_nab", ROOT / "benchmarks" / "nab.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is being built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


nab = _load_nab()

N = 20  # rows per toy file; probation = floor(0.15 * 20) = 3 rows (0, 1, 2)
STAMPS = pd.Series(pd.date_range("2024-01-01", periods=N, freq="h"))
WINDOW = [(STAMPS[10], STAMPS[14])]  # rows 10..14, w = 5
SIGMA_MINUS_1 = math.tanh(2.5)  # sigma(-1) = 0.98661...


def flags(*rows: int, n: int = N) -> np.ndarray:
    """A detection array flagging `rows`."""
    out = np.zeros(n, dtype=bool)
    out[list(rows)] = True
    return out


def score(*rows: int, profile: str = "standard", windows: list | None = None) -> object:
    return nab.score_file(STAMPS, flags(*rows), WINDOW if windows is None else windows, profile)


def test_probation_length() -> None:
    assert nab.probation_length(20) == 3
    assert nab.probation_length(4032) == 604
    assert nab.probation_length(22695) == 750  # capped


def test_sigma_values_and_cap() -> None:
    assert nab.sigma(0.0) == pytest.approx(0.0)
    assert nab.sigma(-1.0) == pytest.approx(SIGMA_MINUS_1)
    assert nab.sigma(0.5) == pytest.approx(-math.tanh(1.25))
    assert nab.sigma(3.0001) == -1.0


def test_detection_at_window_start_is_worth_a_tp() -> None:
    result = score(10)
    # -(14 - 10 + 1)/5 = -1 -> sigma(-1)/sigma(-1)
    assert result.raw == pytest.approx(1.0)
    assert (result.tp, result.fn, result.fp, result.detected) == (1, 0, 0, (True,))


def test_detection_at_window_end_is_worth_little() -> None:
    # -(14 - 14 + 1)/5 = -0.2 -> tanh(0.5)/tanh(2.5) = 0.46212/0.98661 = 0.46839
    assert score(14).raw == pytest.approx(math.tanh(0.5) / SIGMA_MINUS_1)
    assert score(14).raw == pytest.approx(0.468387, abs=1e-6)


def test_only_the_earliest_detection_of_a_window_counts() -> None:
    result = score(12, 13, 14)
    # row 12: -(14 - 12 + 1)/5 = -0.6 -> tanh(1.5)/tanh(2.5)
    assert result.raw == pytest.approx(math.tanh(1.5) / SIGMA_MINUS_1)
    assert (result.tp, result.fp) == (1, 0)


def test_missed_window_costs_a_fn() -> None:
    assert score().raw == pytest.approx(-1.0)
    assert score(profile="reward_low_FN_rate").raw == pytest.approx(-2.0)
    assert (score().tp, score().fn) == (0, 1)


def test_fp_before_any_window_costs_a_fp() -> None:
    result = score(5, 10)
    assert result.raw == pytest.approx(1.0 - 0.11)
    assert result.fp == 1
    assert score(5, 10, profile="reward_low_FP_rate").raw == pytest.approx(1.0 - 0.22)


def test_fp_after_a_window_decays_from_zero_to_minus_a_fp() -> None:
    # row 16: |16 - 14| / (5 - 1) = 0.5 -> 0.11 * sigma(0.5) = -0.11 * tanh(1.25) = -0.0933
    assert score(10, 16).raw == pytest.approx(1.0 - 0.11 * math.tanh(1.25))
    # row 15, just after the window: 0.25 -> barely costs anything compared with row 19
    assert score(10, 15).raw == pytest.approx(1.0 - 0.11 * math.tanh(0.625))
    # a one-row window (w' - 1 = 0) cannot scale the distance: later rows cost the full A_fp
    one_row = [(STAMPS[10], STAMPS[10])]
    assert score(10, 12, windows=one_row).raw == pytest.approx(1.0 - 0.11)


def test_every_flagged_row_outside_windows_is_its_own_fp() -> None:
    result = score(4, 5, 6)
    assert result.fp == 3
    assert result.raw == pytest.approx(-1.0 - 3 * 0.11)


def test_probation_ignores_detections() -> None:
    result = score(0, 1, 2)  # all in probation: no FP, window still missed
    assert (result.raw, result.fp, result.fn) == (pytest.approx(-1.0), 0, 1)


def test_probation_inside_a_window_skips_to_the_first_scored_detection() -> None:
    # window rows 1..5 (w = 5) straddles probation (rows 0-2): the row-2 hit is ignored,
    # row 4 counts: -(5 - 4 + 1)/5 = -0.4 -> tanh(1)/tanh(2.5)
    early = [(STAMPS[1], STAMPS[5])]
    result = score(2, 4, windows=early)
    assert result.raw == pytest.approx(math.tanh(1.0) / SIGMA_MINUS_1)
    assert score(2, windows=early).raw == pytest.approx(-1.0)


def test_window_timestamps_map_to_rows_inside() -> None:
    # bounds between rows: the window covers the first and last rows inside it (10..14)
    between = [(STAMPS[9] + pd.Timedelta("30min"), STAMPS[14] + pd.Timedelta("30min"))]
    assert nab.window_rows(STAMPS, between) == [(10, 14)]
    assert score(10, windows=between).raw == pytest.approx(1.0)


def test_contributions_follow_nab_layout() -> None:
    # NAB's S(t) column puts a window's value on its first row and each FP on its own row
    result = score(5, 12)
    assert np.flatnonzero(result.contributions).tolist() == [5, 10]
    assert result.contributions.sum() == pytest.approx(result.raw)


def _write_labels(folder: Path, windows: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]]) -> Path:
    (folder / "labels").mkdir(parents=True)
    text = {k: [[str(a), str(b)] for a, b in spans] for k, spans in windows.items()}
    (folder / "labels" / "combined_windows.json").write_text(json.dumps(text))
    return folder


def test_normalisation_over_files_scored_together(tmp_path: Path) -> None:
    data_dir = _write_labels(tmp_path, {"a/one.csv": WINDOW, "a/two.csv": WINDOW, "b/none.csv": []})
    detections = {
        "a/one.csv": (STAMPS, flags(10)),  # +1
        "a/two.csv": (STAMPS, flags()),  # -1
        "b/none.csv": (STAMPS, flags(5)),  # -0.11
    }
    result = nab.score_corpus(detections, data_dir, "standard")
    assert (result.raw, result.perfect, result.null) == (pytest.approx(-0.11), 2.0, -2.0)
    assert result.score == pytest.approx(100 * (-0.11 + 2) / 4)
    low_fn = nab.score_corpus(detections, data_dir, "reward_low_FN_rate")
    assert low_fn.score == pytest.approx(100 * (1 - 2 - 0.11 + 4) / 6)
    perfect = {k: (STAMPS, flags(10) if k != "b/none.csv" else flags()) for k in detections}
    assert nab.score_corpus(perfect, data_dir).score == pytest.approx(100.0)
    null = {k: (STAMPS, flags()) for k in detections}
    assert nab.score_corpus(null, data_dir).score == pytest.approx(0.0)


def test_window_metrics_count_rows_and_runs(tmp_path: Path) -> None:
    data_dir = _write_labels(tmp_path, {"a/one.csv": WINDOW, "a/two.csv": [(STAMPS[3], STAMPS[4])]})
    detections = {
        # in probation (ignored), a run of 3 FPs, one window hit twice, a lone FP
        "a/one.csv": (STAMPS, flags(1, 5, 6, 7, 11, 12, 18)),
        "a/two.csv": (STAMPS, flags()),  # missed window
    }
    m = nab.window_metrics(detections, data_dir)
    assert (m.tp, m.fn, m.fp_rows, m.fp_runs) == (1, 1, 4, 2)
    assert (m.precision, m.recall) == (pytest.approx(1 / 5), pytest.approx(1 / 2))
    assert m.f1 == pytest.approx(2 * 0.2 * 0.5 / 0.7)
    assert m.precision_runs == pytest.approx(1 / 3)


def test_detector_output_aligned_by_timestamp() -> None:
    # kpiwatch writes UTC text on a regular grid: a filled gap row (01:00), a repeated stamp (03:00)
    data = pd.Series(pd.to_datetime(["2024-01-01 00:00", "2024-01-01 02:00", "2024-01-01 03:00"]))
    text = ["2024-01-01T00:00:00+00:00", "2024-01-01T01:00:00+00:00", "2024-01-01T03:00:00+00:00"] + [
        "2024-01-01T03:00:00+00:00"
    ]
    out = nab._read_stamps(pd.Series(text))
    on_data, lost = nab.align_flags(data, out, np.array([False, True, False, True]))
    assert on_data.tolist() == [False, False, True]
    assert lost == 1  # the gap row's flag has no data row to land on


# ----------------------------------------------------------------------------- the command
# NAB's published figures are reproduced by `python benchmarks/nab.py reference` (a benchmark: it
# needs ../shared/data/nab-dev, 29 MB); the tests here run on what they generate.


def _nab_layout(folder: Path, keys: list[str]) -> Path:
    """A minimal NAB folder: labels/combined_windows.json with one window per data file."""
    (folder / "labels").mkdir(parents=True)
    windows = {key: [["2014-07-01 00:00:00.000000", "2014-07-02 00:00:00.000000"]] for key in keys}
    (folder / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    return folder


def test_score_command_names_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = ["realKnownCause/nyc_taxi.csv", "realTraffic/speed_6005.csv", "realTraffic/TravelTime_387.csv"]
    data = _nab_layout(tmp_path / "nab", keys)
    out = tmp_path / "out"
    (out / "realKnownCause").mkdir(parents=True)
    pd.DataFrame({"timestamp": ["2014-07-01 00:00:00"], "anomaly": [0]}).to_csv(
        out / "realKnownCause" / "nyc_taxi.csv", index=False
    )
    assert nab.main(["--data", str(data), "score", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2 of 3 file(s) missing" in err
    assert "realTraffic/speed_6005.csv" in err and "realKnownCause/nyc_taxi.csv" not in err


def test_no_nab_data_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert nab.main(["--data", str(tmp_path), "reference"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
