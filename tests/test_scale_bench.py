"""Smoke test of benchmarks/scale.py's data and config (the daemon cycles are the benchmark's own
business): the generated table reads back through kpiwatch's SQL and Parquet sources as the
promised number of series, and the generated config is valid."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from benchmarks import scale
from forecaster.kpis import kpi_series
from forecaster.settings import load_config
from forecaster.sources import make_source


@pytest.mark.parametrize("source", ["sql", "parquet"])
def test_generated_series_read_back(tmp_path: Path, source: str) -> None:
    data, _, reused = scale.prepare(tmp_path, 12, seed=3, cycles=2, source=source)
    assert not reused and data.campaigns == 5 and data.series == 12
    config = scale.write_config(tmp_path, data, source, "local", tmp_path / "state.db", charts=False,
                                dask_address=None, workers=None)
    settings = load_config(config)
    judged = 0
    for name, kpi in settings.kpis.items():
        frame = make_source(settings.sources[kpi.source], settings.timezone, kpi.source).fetch(
            kpi.metrics, kpi.dimensions, kpi.freq)
        found = kpi_series(name, kpi, frame)
        judged += len(found)
        total = next(s for s in found if not s.segment)
        expected = data.values(0 if name == "sessions" else data.campaigns + 1)
        assert np.allclose(total.values.to_numpy()[-30:], expected[-30:])
    assert judged == data.series
    # every series has its judged days (gaps and late starts are in the history only)
    assert data.present[:, -(2 + 1 + 14):].all()
    assert data.incidents and all(i["last_day"] >= str(scale.FIRST_DAY + timedelta(days=scale.DAYS - 3)) for i in data.incidents)
    # a second prepare reuses what is there
    assert scale.prepare(tmp_path, 12, seed=3, cycles=2, source=source)[2]


def test_snaive_floor_reads_the_table(tmp_path: Path) -> None:
    data, _, _ = scale.prepare(tmp_path, 12, seed=3, cycles=2, source="sql")
    floor = scale.peer_snaive(data, tmp_path, "sql")
    assert floor["series"] == 12 and floor["band_s"] >= 0
