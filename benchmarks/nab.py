"""NAB scoring for kpiwatch: how well do the anomalies it flags match labelled incident windows?

A re-implementation of the Numenta Anomaly Benchmark's scoring rules, written from the rules in
`shared/data/README.md` (section nab-dev) and checked row by row against NAB's published per-row
scores of two reference detectors (numenta HTM and windowedGaussian).

Rules, as this module applies them (row indices are positions in the data file, 0-based):
- probation: the first min(floor(0.15 * N), 750) rows of a file are not scored; detections there
  are ignored;
- a window [start, end] (inclusive timestamps) covers rows a..b: the first and last rows whose
  timestamp falls inside it; w = b - a + 1;
- sigma(x) = 2 / (1 + exp(5x)) - 1, and -1 for x > 3;
- true positive: only the earliest scored detection i of a window counts, worth
  A_tp * sigma(-(b - i + 1) / w) / sigma(-1), i.e. A_tp at the window's first row, falling to
  A_tp * sigma(-1/w) / sigma(-1) at its last (about 2.5 / w: near 0 for NAB's long windows), so
  early detection pays; a window without one costs -A_fn;
- false positive: every flagged scored row outside all windows costs -A_fp if no window ends
  before it, else A_fp * sigma((i - b') / (w' - 1)) for the last window (end b', width w') before
  it: about 0 right after that window (likely the same incident seen late), -0.99 A_fp one
  window width past it, exactly -A_fp beyond three;
- normalised score = 100 * (raw - null) / (perfect - null), perfect = A_tp * n_windows,
  null = -A_fn * n_windows, summed over all files scored together.

Usage:
    python benchmarks/nab.py reference            # re-score NAB's reference detectors
    python benchmarks/nab.py score DIR            # score kpiwatch replay outputs in DIR
Both accept `--data DIR` (default: ../shared/data/nab-dev next to the checkout).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab-dev"

# (A_tp, A_fp, A_fn) per NAB application profile.
PROFILES: dict[str, tuple[float, float, float]] = {
    "standard": (1.0, 0.11, 1.0),
    "reward_low_FP_rate": (1.0, 0.22, 1.0),
    "reward_low_FN_rate": (1.0, 0.11, 2.0),
}

PROBATION_FRACTION = 0.15
PROBATION_CAP = 750  # NAB: 0.15 * 5000 rows; long files would otherwise lose thousands of rows

# NAB's published thresholds (config/thresholds.json), one per detector and profile: NAB picks
# each profile's threshold separately to maximise that profile's raw score. They only differ for
# numenta's reward_low_FP_rate, whose published S(t) column and 63.17 come from 0.5751955...;
# at the standard threshold that profile scores 63.29 (printed as a note by `reference`).
REFERENCE_THRESHOLDS: dict[str, dict[str, float]] = {
    "numenta": {
        "standard": 0.5421876907348634,
        "reward_low_FP_rate": 0.5751955032348636,
        "reward_low_FN_rate": 0.5421876907348634,
    },
    "windowedGaussian": {"standard": 1.0, "reward_low_FP_rate": 1.0, "reward_low_FN_rate": 1.0},
}
# Published normalised scores on exactly these 42 files (README, nab-dev); our scorer must hit them.
REFERENCE_TARGETS: dict[tuple[str, str], float] = {
    ("numenta", "standard"): 69.72,
    ("windowedGaussian", "standard"): 30.53,
    ("numenta", "reward_low_FP_rate"): 63.17,
    ("numenta", "reward_low_FN_rate"): 74.02,
}

Window = tuple[pd.Timestamp, pd.Timestamp]
Detections = tuple[pd.Series, np.ndarray]  # (timestamps of the data rows, flagged per row)


class ScoringError(ValueError):
    """Inputs the scorer cannot score (missing files, bad columns, overlapping windows)."""


# ----------------------------------------------------------------------------- scoring rules


def sigma(x: float) -> float:
    """NAB's scaled sigmoid: +1 far before 0, 0 at 0, -1 beyond 3 (the cap NAB applies)."""
    if x > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def probation_length(n_rows: int) -> int:
    """Rows at the start of a file that are not scored (a detector's warm-up)."""
    return int(min(math.floor(PROBATION_FRACTION * n_rows), PROBATION_CAP))


def load_windows(data_dir: Path) -> dict[str, list[Window]]:
    """`labels/combined_windows.json` as {"<category>/<file>.csv": [(start, end), ...]}, sorted."""
    raw = json.loads((Path(data_dir) / "labels" / "combined_windows.json").read_text())
    return {
        key: sorted((pd.Timestamp(start), pd.Timestamp(end)) for start, end in spans)
        for key, spans in sorted(raw.items())
    }


def window_rows(timestamps: pd.Series, windows: Iterable[Window]) -> list[tuple[int, int] | None]:
    """Row span (a, b), inclusive, of each window; None for a window with no row inside it.

    A mask rather than a binary search because timestamps need not be monotonic (NAB's
    machine_temperature file repeats an hour); the span runs from the first to the last row
    whose timestamp lies in [start, end].
    """
    stamps = pd.to_datetime(pd.Series(timestamps)).to_numpy()
    spans: list[tuple[int, int] | None] = []
    for start, end in windows:
        inside = np.flatnonzero((stamps >= start.to_datetime64()) & (stamps <= end.to_datetime64()))
        spans.append((int(inside[0]), int(inside[-1])) if len(inside) else None)
    _check_disjoint([s for s in spans if s is not None])
    return spans


def _check_disjoint(spans: list[tuple[int, int]]) -> None:
    """NAB's windows never overlap; if they did, "earliest detection per window" would double-count."""
    ordered = sorted(spans)
    for (_, b0), (a1, _) in zip(ordered, ordered[1:]):
        if a1 <= b0:
            raise ScoringError(f"windows overlap at rows {b0} and {a1}")


def tp_value(i: int, a: int, b: int, a_tp: float) -> float:
    """Worth of the earliest detection at row i in window rows a..b (A_tp at a, ~2.5/w A_tp at b)."""
    width = b - a + 1
    return a_tp * sigma(-(b - i + 1) / width) / sigma(-1.0)


def fp_value(i: int, prev: tuple[int, int] | None, a_fp: float) -> float:
    """Cost (negative) of a flagged row i outside every window, given the last window before it.

    Right after a window a detection is probably the same incident seen late, so it costs
    almost nothing; the cost reaches ~A_fp one window width past the window's end.
    """
    if prev is None:
        return -a_fp
    a, b = prev
    # A one-row window has w' - 1 = 0: NAB would divide by zero; any later row is "far past it".
    position = abs(i - b) / (b - a) if b > a else math.inf
    return a_fp * sigma(position)


@dataclass(frozen=True)
class FileScore:
    """One file under one profile. `contributions` is laid out like NAB's S(t)_<profile> column:
    each window's TP value (or -A_fn) on the window's first row, each FP's cost on its own row."""

    raw: float
    tp: int
    fn: int
    fp: int
    detected: tuple[bool, ...]
    contributions: np.ndarray = field(repr=False, compare=False)

    @property
    def n_windows(self) -> int:
        """Labelled windows of the file."""
        return len(self.detected)


def score_file(
    timestamps: pd.Series,
    detections: np.ndarray,
    windows: list[Window],
    profile: str = "standard",
) -> FileScore:
    """NAB raw score of one file: detections[i] is True where the detector flags row i."""
    a_tp, a_fp, a_fn = PROFILES[profile]
    flags = np.asarray(detections, dtype=bool)
    n = len(flags)
    if len(timestamps) != n:
        raise ScoringError(f"{len(timestamps)} timestamps but {n} detections")
    probation = probation_length(n)
    spans = window_rows(timestamps, windows)
    contributions = np.zeros(n)
    detected: list[bool] = []

    for span in spans:
        if span is None:
            # A window with no row in the file can never be detected; it still counts against
            # the detector, as every labelled window does (perfect/null use all windows).
            detected.append(False)
            continue
        a, b = span
        hits = np.flatnonzero(flags[max(a, probation) : b + 1])
        if len(hits):
            i = max(a, probation) + int(hits[0])  # earliest scored detection; later ones are free
            contributions[a] += tp_value(i, a, b, a_tp)
            detected.append(True)
        else:
            contributions[a] += -a_fn
            detected.append(False)
    # Undetectable windows have no row to carry -A_fn; add it to the raw score directly.
    unplaced = -a_fn * sum(1 for s in spans if s is None)

    inside = np.zeros(n, dtype=bool)
    real = sorted(s for s in spans if s is not None)
    for a, b in real:
        inside[a : b + 1] = True
    ends = np.array([b for _, b in real], dtype=np.int64)
    fp_rows = np.flatnonzero(flags & ~inside)
    fp_rows = fp_rows[fp_rows >= probation]
    for i in fp_rows:
        k = int(np.searchsorted(ends, i, side="left")) - 1  # last window ending before row i
        contributions[i] += fp_value(int(i), real[k] if k >= 0 else None, a_fp)

    tp = sum(detected)
    return FileScore(
        raw=float(contributions.sum() + unplaced),
        tp=tp,
        fn=len(detected) - tp,
        fp=len(fp_rows),
        detected=tuple(detected),
        contributions=contributions,
    )


@dataclass(frozen=True)
class CorpusScore:
    """Files scored together under one profile; `score` is NAB's normalised score (0 = null)."""

    profile: str
    score: float
    raw: float
    perfect: float
    null: float
    tp: int
    fn: int
    fp: int
    files: dict[str, FileScore] = field(repr=False, compare=False)

    @property
    def n_windows(self) -> int:
        """Labelled windows of all files scored."""
        return self.tp + self.fn


def normalise(raw: float, n_windows: int, profile: str) -> tuple[float, float, float]:
    """(normalised score, perfect, null) for a raw score over n_windows windows."""
    a_tp, _, a_fn = PROFILES[profile]
    perfect, null = a_tp * n_windows, -a_fn * n_windows
    if perfect == null:  # no windows at all: nothing to normalise against
        return (math.nan, perfect, null)
    return (100.0 * (raw - null) / (perfect - null), perfect, null)


def score_corpus(
    detections_by_file: Mapping[str, Detections],
    data_dir: Path = DEFAULT_DATA,
    profile: str = "standard",
    windows: Mapping[str, list[Window]] | None = None,
) -> CorpusScore:
    """Normalised NAB score of the given files (keys "<category>/<file>.csv") scored together."""
    labels = windows if windows is not None else load_windows(data_dir)
    unknown = sorted(set(detections_by_file) - set(labels))
    if unknown:
        raise ScoringError(f"no windows for: {', '.join(unknown)}")
    files = {
        key: score_file(stamps, flags, labels[key], profile)
        for key, (stamps, flags) in sorted(detections_by_file.items())
    }
    raw = sum(f.raw for f in files.values())
    tp, fn = sum(f.tp for f in files.values()), sum(f.fn for f in files.values())
    score, perfect, null = normalise(raw, tp + fn, profile)
    return CorpusScore(profile, score, raw, perfect, null, tp, fn, sum(f.fp for f in files.values()), files)


# ----------------------------------------------------------------------------- window metrics


@dataclass(frozen=True)
class WindowMetrics:
    """Windows as events: a window with >= 1 scored detection is a TP, one without an FN; every
    flagged scored row outside all windows is an FP (`fp_rows`), or each run of consecutive such
    rows is one FP (`fp_runs`, closer to "alerts a person would receive")."""

    tp: int
    fn: int
    fp_rows: int
    fp_runs: int

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp_rows)

    @property
    def f1(self) -> float:
        return _f1(self.precision, self.recall)

    @property
    def precision_runs(self) -> float:
        return _ratio(self.tp, self.tp + self.fp_runs)

    @property
    def f1_runs(self) -> float:
        return _f1(self.precision_runs, self.recall)


def _ratio(num: int, den: int) -> float:
    """num / den; NaN when there is nothing to divide by (no windows, or no detections at all)."""
    return num / den if den else math.nan


def _f1(p: float, r: float) -> float:
    """Harmonic mean of precision and recall; NaN if either is undefined."""
    if math.isnan(p) or math.isnan(r):
        return math.nan
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def file_window_counts(timestamps: pd.Series, detections: np.ndarray, windows: list[Window]) -> WindowMetrics:
    """Window TP/FN and FP rows/runs of one file (probation rows ignored)."""
    flags = np.asarray(detections, dtype=bool).copy()
    flags[: probation_length(len(flags))] = False
    spans = window_rows(timestamps, windows)
    inside = np.zeros(len(flags), dtype=bool)
    tp = 0
    for span in spans:
        if span is None:
            continue
        a, b = span
        inside[a : b + 1] = True
        tp += bool(flags[a : b + 1].any())
    outside = flags & ~inside
    # A run starts at a flagged outside row whose predecessor is not one.
    starts = outside & ~np.concatenate(([False], outside[:-1]))
    return WindowMetrics(tp=tp, fn=len(spans) - tp, fp_rows=int(outside.sum()), fp_runs=int(starts.sum()))


def window_metrics(
    detections_by_file: Mapping[str, Detections],
    data_dir: Path = DEFAULT_DATA,
    windows: Mapping[str, list[Window]] | None = None,
) -> WindowMetrics:
    """Window precision/recall/F1 counts summed over the given files."""
    labels = windows if windows is not None else load_windows(data_dir)
    parts = [file_window_counts(s, f, labels[k]) for k, (s, f) in detections_by_file.items()]
    return WindowMetrics(
        tp=sum(p.tp for p in parts),
        fn=sum(p.fn for p in parts),
        fp_rows=sum(p.fp_rows for p in parts),
        fp_runs=sum(p.fp_runs for p in parts),
    )


# ----------------------------------------------------------------------------- loading results


def _read_stamps(texts: pd.Series) -> pd.Series:
    """Timestamps as naive UTC: NAB's are naive; kpiwatch writes UTC ISO text with an offset."""
    stamps = pd.to_datetime(texts, utc=True, format="ISO8601")
    return stamps.dt.tz_localize(None)


def reference_path(data_dir: Path, detector: str, key: str) -> Path:
    """NAB's results file of `detector` for data file `key` ("<category>/<file>.csv")."""
    category, name = key.split("/", 1)
    return Path(data_dir) / "reference-results" / detector / category / f"{detector}_{name}"


@dataclass(frozen=True)
class ReferenceRun:
    """A reference detector's published per-row output for the files scored."""

    stamps: dict[str, pd.Series]
    anomaly_score: dict[str, np.ndarray]
    published: dict[str, pd.DataFrame]  # the S(t)_<profile> columns, for the per-row check

    def detections(self, threshold: float) -> dict[str, Detections]:
        """Rows flagged at `threshold` (NAB: anomaly_score >= threshold)."""
        return {key: (self.stamps[key], self.anomaly_score[key] >= threshold) for key in self.stamps}


def load_reference(data_dir: Path, detector: str, keys: Iterable[str]) -> ReferenceRun:
    """Read `detector`'s results files for the data files `keys`."""
    stamps, scores, published = {}, {}, {}
    for key in keys:
        frame = pd.read_csv(reference_path(data_dir, detector, key))
        stamps[key] = _read_stamps(frame["timestamp"])
        scores[key] = frame["anomaly_score"].to_numpy(dtype="float64")
        published[key] = frame[[c for c in frame.columns if c.startswith("S(t)_")]]
    return ReferenceRun(stamps, scores, published)


def load_data_stamps(data_dir: Path, key: str) -> pd.Series:
    """Timestamps of data file `key`, in file order (the rows NAB scores)."""
    return _read_stamps(pd.read_csv(Path(data_dir) / "data" / key, usecols=["timestamp"])["timestamp"])


def align_flags(data_stamps: pd.Series, out_stamps: pd.Series, flags: np.ndarray) -> tuple[np.ndarray, int]:
    """Detector flags moved onto the data file's rows; also the flagged rows that matched none.

    kpiwatch puts a series on a regular grid (gap rows, duplicate stamps folded), so its rows
    are matched to the data rows by timestamp, not position. A flag on a row the data file
    lacks (a filled gap) cannot be scored; it is counted so the report can say so. A stamp the
    data file repeats (an hour replayed at a clock change) gets the flag on each of its rows.
    """
    flagged = pd.Series(np.asarray(flags, dtype=bool), index=pd.DatetimeIndex(out_stamps))
    flagged = flagged.groupby(level=0).any()  # a duplicated stamp flagged once is flagged
    on_data = flagged.reindex(pd.DatetimeIndex(data_stamps), fill_value=False).to_numpy(dtype=bool)
    lost = int(flagged[~flagged.index.isin(pd.DatetimeIndex(data_stamps))].sum())
    return on_data, lost


def load_candidate(data_dir: Path, out_dir: Path, keys: Iterable[str]) -> tuple[dict[str, Detections], int]:
    """Detections in `out_dir/<category>/<file>.csv` (columns timestamp, anomaly 0/1).

    Raises ScoringError naming every missing file or file without the needed columns.
    """
    keys = list(keys)
    missing = [k for k in keys if not (Path(out_dir) / k).is_file()]
    if missing:
        raise ScoringError(f"{len(missing)} of {len(keys)} file(s) missing in {out_dir}: " + ", ".join(missing))
    detections: dict[str, Detections] = {}
    lost = 0
    bad: list[str] = []
    for key in keys:
        frame = pd.read_csv(Path(out_dir) / key)
        if not {"timestamp", "anomaly"} <= set(frame.columns):
            bad.append(key)
            continue
        stamps = load_data_stamps(data_dir, key)
        flags = frame["anomaly"].fillna(0).astype(int).to_numpy() != 0
        on_data, n_lost = align_flags(stamps, _read_stamps(frame["timestamp"]), flags)
        detections[key] = (stamps, on_data)
        lost += n_lost
    if bad:
        raise ScoringError("need columns timestamp and anomaly in: " + ", ".join(bad))
    return detections, lost


# ----------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Report:
    """Everything the table shows for one detector."""

    name: str
    scores: dict[str, CorpusScore]
    windows: WindowMetrics


def evaluate(
    name: str,
    detections: Mapping[str, Detections],
    windows: Mapping[str, list[Window]],
    by_profile: Mapping[str, Mapping[str, Detections]] | None = None,
) -> Report:
    """All profiles and window metrics for one detector.

    `by_profile` overrides the detections of a profile (a reference detector at that profile's
    own threshold); window metrics always use `detections`.
    """
    chosen = by_profile or {}
    scores = {p: score_corpus(chosen.get(p, detections), profile=p, windows=windows) for p in PROFILES}
    return Report(name, scores, window_metrics(detections, windows=windows))


def evaluate_reference(name: str, run: ReferenceRun, windows: Mapping[str, list[Window]]) -> Report:
    """A reference detector at NAB's published thresholds (window metrics at the standard one)."""
    cuts = REFERENCE_THRESHOLDS[name]
    by_profile = {p: run.detections(cuts[p]) for p in PROFILES}
    return evaluate(name, by_profile["standard"], windows, by_profile)


def row_check(report: Report, published: Mapping[str, pd.DataFrame]) -> tuple[float, list[str]]:
    """Largest |our per-row contribution - NAB's S(t)| over all files and profiles, and the
    files where any row differs by more than 1e-6 (the per-row diagnosis of a misread rule)."""
    worst, differing = 0.0, []
    for key, columns in published.items():
        for profile, corpus in report.scores.items():
            column = f"S(t)_{profile}"
            if column not in columns:
                continue
            diff = float(np.max(np.abs(corpus.files[key].contributions - columns[column].to_numpy()), initial=0.0))
            worst = max(worst, diff)
            if diff > 1e-6 and key not in differing:
                differing.append(key)
    return worst, differing


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def format_table(reports: list[Report], baseline: str = "numenta") -> str:
    """Plain-text table: one row per detector."""
    base = next((r for r in reports if r.name == baseline), None)
    header = [
        "detector", "standard", "low_FP", "low_FN", "x numenta", "raw(std)",
        "win TP", "win FN", "FP rows", "FP runs", "P", "R", "F1", "P runs", "F1 runs",
    ]  # fmt: skip
    rows = [header]
    for r in reports:
        std = r.scores["standard"]
        ratio = std.score / base.scores["standard"].score if base else math.nan
        w = r.windows
        rows.append([
            r.name, _fmt(std.score), _fmt(r.scores["reward_low_FP_rate"].score),
            _fmt(r.scores["reward_low_FN_rate"].score), _fmt(ratio, 3), _fmt(std.raw, 3),
            str(w.tp), str(w.fn), str(w.fp_rows), str(w.fp_runs),
            _fmt(w.precision, 3), _fmt(w.recall, 3), _fmt(w.f1, 3), _fmt(w.precision_runs, 3), _fmt(w.f1_runs, 3),
        ])  # fmt: skip
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    # Name left-aligned, numbers right-aligned so their decimals line up.
    lines = [
        "  ".join(cell.ljust(widths[c]) if c == 0 else cell.rjust(widths[c]) for c, cell in enumerate(row))
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def target_lines(reports: list[Report]) -> tuple[list[str], bool]:
    """One line per published reference figure: ours, the target, match or not (2 decimals)."""
    lines, ok = [], True
    by_name = {r.name: r for r in reports}
    for (detector, profile), target in REFERENCE_TARGETS.items():
        if detector not in by_name:
            continue
        ours = round(by_name[detector].scores[profile].score, 2)
        match = math.isclose(ours, target, abs_tol=1e-9)
        ok &= match
        verdict = "MATCH" if match else "MISMATCH"
        lines.append(f"  {detector:<17} {profile:<19} {ours:6.2f}  target {target:6.2f}  {verdict}")
    return lines, ok


def reference_reports(data_dir: Path, windows: Mapping[str, list[Window]]) -> tuple[list[Report], list[str]]:
    """Re-score both reference detectors; also the check lines against NAB's S(t) columns."""
    reports, checks = [], []
    for detector, cuts in REFERENCE_THRESHOLDS.items():
        run = load_reference(data_dir, detector, windows)
        report = evaluate_reference(detector, run, windows)
        worst, differing = row_check(report, run.published)
        status = "all rows agree" if not differing else f"{len(differing)} file(s) differ: {', '.join(differing)}"
        checks.append(f"  {detector:<17} max |ours - S(t)| = {worst:.1e} over 3 profiles; {status}")
        if cuts["reward_low_FP_rate"] != cuts["standard"]:
            # The brief's single threshold per detector, shown so the two readings can be compared.
            alt = score_corpus(run.detections(cuts["standard"]), profile="reward_low_FP_rate", windows=windows)
            checks.append(
                f"  {'':<17} note: reward_low_FP_rate at NAB's profile threshold {cuts['reward_low_FP_rate']}; "
                f"at the standard threshold {cuts['standard']} it is {alt.score:.2f}"
            )
        reports.append(report)
    return reports, checks


def _intro(data_dir: Path, windows: Mapping[str, list[Window]]) -> str:
    n_windows = sum(len(w) for w in windows.values())
    return (
        f"NAB scoring on {len(windows)} files, {n_windows} windows ({data_dir})\n"
        "score columns: normalised NAB score per profile (100 = perfect, 0 = no detections);\n"
        "window columns: TP/FN = windows with/without a scored detection, FP rows = flagged rows\n"
        "outside windows, FP runs = consecutive such rows counted once; P = TP/(TP+FP), R = TP/(TP+FN)"
    )


def cmd_reference(data_dir: Path) -> int:
    """`reference`: re-score numenta and windowedGaussian; exit 1 if a published figure is missed."""
    windows = load_windows(data_dir)
    reports, checks = reference_reports(data_dir, windows)
    lines, ok = target_lines(reports)
    standard = {r.name: round(r.scores["standard"].score, 2) for r in reports}
    ok_standard = all(standard[d] == t for (d, p), t in REFERENCE_TARGETS.items() if p == "standard")
    print(_intro(data_dir, windows))
    print()
    print(format_table(reports))
    print()
    print("published figures (README, nab-dev):")
    print("\n".join(lines))
    print("per-row check against NAB's S(t)_<profile> columns:")
    print("\n".join(checks))
    print()
    print(
        f"standard figures match 69.72 / 30.53: {'yes' if ok_standard else 'NO'} "
        f"(numenta {standard['numenta']:.2f}, windowedGaussian {standard['windowedGaussian']:.2f}); "
        f"all published figures match: {'yes' if ok else 'NO'}"
    )
    return 0 if ok else 1


def cmd_score(data_dir: Path, out_dir: Path, name: str) -> int:
    """`score DIR`: a folder of detector outputs beside the two reference detectors."""
    windows = load_windows(data_dir)
    try:
        detections, lost = load_candidate(data_dir, out_dir, windows)
    except ScoringError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    reports, checks = reference_reports(data_dir, windows)
    reports.append(evaluate(name, detections, windows))
    _, ok = target_lines(reports)
    print(_intro(data_dir, windows))
    print()
    print(format_table(reports))
    print()
    print("reference detectors, per-row check against NAB's S(t) columns:")
    print("\n".join(checks))
    if lost:
        print(f"note: {lost} flagged row(s) in {out_dir} have no row in the data files (gap fills); not scored")
    print("reference figures reproduced: " + ("yes" if ok else "NO (scorer or data changed)"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="nab.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"nab-dev folder (default {DEFAULT_DATA})")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("reference", help="re-score NAB's reference detectors and check the published figures")
    score = sub.add_parser("score", help="score a folder of detector outputs (<category>/<file>.csv)")
    score.add_argument("dir", type=Path, help="folder with one CSV per data file: columns timestamp, anomaly")
    score.add_argument("--name", default=None, help="detector name in the table (default: the folder name)")
    args = parser.parse_args(argv)
    data_dir = args.data.resolve()
    if not (data_dir / "labels" / "combined_windows.json").is_file():
        print(f"error: no NAB data at {data_dir} (labels/combined_windows.json missing); use --data", file=sys.stderr)
        return 2
    if args.command == "reference":
        return cmd_reference(data_dir)
    return cmd_score(data_dir, args.dir, args.name or args.dir.resolve().name)


if __name__ == "__main__":
    sys.exit(main())
