"""Tests of the YAML config: a good file round-trips; every mistake is one exact ConfigError line;
`${VAR}` comes from the environment; random input never escapes as another exception.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import forecaster.models  # noqa: F401  (registers the models the config may name)
from forecaster.settings import ConfigError, KPIConfig, Settings, load_config, parse_config
from forecaster.types import BadInputError, Direction

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
ORIGIN = "test.yaml"

GOOD = """\
sources:
  default:
    type: demo
kpis:
  sessions:
    metric: sessions
  conversion_rate:
    ratio: {numerator: conversions, denominator: sessions}
    unit: "%"
"""
KPI_KEYS = ", ".join(KPIConfig.model_fields)
TOP_KEYS = "timezone, country, currency, locale, state_dir, reselect_days, events, state, alerting, daemon, executor, digest, sources, kpis"


def _sessions(extra: str) -> str:
    """GOOD with `extra` (one or more `key: value` lines) added to the `sessions` KPI."""
    lines = "".join(f"\n    {line}" for line in extra.splitlines())
    return GOOD.replace("    metric: sessions", f"    metric: sessions{lines}")


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, origin=ORIGIN)
    return str(info.value)


# --------------------------------------------------------------------------- a good config


def test_good_config_is_read_with_documented_defaults() -> None:
    config = parse_config(GOOD, origin=ORIGIN)
    assert config.timezone == "UTC"
    assert config.country is None
    assert config.sources["default"].type == "demo"
    assert list(config.kpis) == ["sessions", "conversion_rate"]

    sessions = config.kpi("sessions")
    assert (sessions.metric, sessions.ratio, sessions.metrics) == ("sessions", None, ["sessions"])
    assert (sessions.good, sessions.freq, sessions.model, sessions.source) == (Direction.UP, "D", "ets", "default")
    assert (sessions.level, sessions.min_volume, sessions.min_abs_change) == (0.99, 0.0, 0.0)
    assert (sessions.for_periods, sessions.good_news, sessions.event_margin, sessions.check_window) == (
        1, False, 0.15, 7)

    rate = config.kpi("conversion_rate")
    assert rate.metric is None
    assert (rate.ratio.numerator, rate.ratio.denominator) == ("conversions", "sessions")  # type: ignore[union-attr]
    assert rate.metrics == ["conversions", "sessions"]
    assert rate.unit == "%"


def test_good_config_round_trips_through_yaml() -> None:
    config = parse_config(GOOD)
    again = parse_config(yaml.safe_dump(config.model_dump(mode="json")))
    assert again == config


def test_kpi_dimensions_are_segments_and_filters() -> None:
    config = parse_config(_sessions("segments: [device, channel]\nfilter: {country: [NL], channel: [email]}"))
    assert config.kpi("sessions").dimensions == ["channel", "country", "device"]


def test_unknown_kpi_lists_the_configured_ones() -> None:
    config = parse_config(GOOD)
    with pytest.raises(BadInputError) as info:
        config.kpi("nope")
    assert str(info.value) == "unknown KPI 'nope'; the config defines: conversion_rate, sessions"


# --------------------------------------------------------------------------- one exact line per mistake

BAD_CASES = [
    pytest.param(GOOD + "colour: red\n", f"colour: unknown key; allowed here: {TOP_KEYS}", id="top-level-key"),
    pytest.param(_sessions("treshold: 3"), f"kpis.sessions.treshold: unknown key; allowed here: {KPI_KEYS}",
                 id="kpi-key"),
    pytest.param(GOOD.replace("denominator: sessions}", "denominator: sessions, weight: 2}"),
                 "kpis.conversion_rate.ratio.weight: unknown key; allowed here: numerator, denominator",
                 id="ratio-key"),
    pytest.param(GOOD.replace("type: demo", "type: demo\n    url: x"),
                 "sources.default.url: unknown key; allowed here: type", id="source-key"),
    pytest.param(_sessions("level: high"),
                 "kpis.sessions.level: Input should be a valid number, unable to parse string as a number "
                 "(got 'high')", id="level-type"),
    pytest.param(_sessions("level: 1.5"), "kpis.sessions.level: Input should be less than 1 (got 1.5)",
                 id="level-high"),
    pytest.param(_sessions("level: 95"), "kpis.sessions.level: Input should be less than 1 (got 95)",
                 id="level-percent"),
    pytest.param(_sessions("level: 0.3"), "kpis.sessions.level: Input should be greater than 0.5 (got 0.3)",
                 id="level-low"),
    pytest.param(_sessions("model: arima"),
                 "kpis.sessions.model: unknown model 'arima'; choose one of: auto, ets, prophet, seasonal_naive",
                 id="model"),
    pytest.param(_sessions("ratio: {numerator: a, denominator: b}"),
                 "kpis.sessions: give exactly one of `metric: <column>` or `ratio: {numerator, denominator}`",
                 id="metric-and-ratio"),
    pytest.param(GOOD.replace("  sessions:\n    metric: sessions", "  own_kpi:\n    good: up"),
                 "kpis.own_kpi: give exactly one of `metric: <column>` or `ratio: {numerator, denominator}`",
                 id="neither"),
    pytest.param(_sessions("source: ga4"),
                 "(top level): kpi 'sessions' uses source 'ga4', which is not under `sources:` (defined: default)",
                 id="unknown-source"),
    pytest.param("timezone: Mars/Olympus\n" + GOOD,
                 "timezone: unknown timezone 'Mars/Olympus'; use an IANA name such as Europe/Amsterdam",
                 id="timezone"),
    pytest.param(_sessions("good: sideways"), "kpis.sessions.good: Input should be 'up' or 'down' (got 'sideways')",
                 id="good"),
    pytest.param(_sessions("freq: W"), "kpis.sessions.freq: Input should be 'h' or 'D' (got 'W')", id="freq"),
    pytest.param(_sessions("for_periods: 0"),
                 "kpis.sessions.for_periods: Input should be greater than or equal to 1 (got 0)", id="for-periods"),
    pytest.param(_sessions("min_volume: -1"),
                 "kpis.sessions.min_volume: Input should be greater than or equal to 0 (got -1)", id="min-volume"),
    pytest.param(GOOD.replace("type: demo", "type: mysql"),
                 "sources.default.type: unknown source type; choose one of: demo, csv, parquet, sql, ga4 (got 'mysql')",
                 id="source-type"),
    pytest.param("kpis:\n  a: {metric: x}\n", "sources: required key is missing", id="no-sources"),
    pytest.param("sources: {default: {type: demo}}\nkpis: {}\n",
                 "kpis: Dictionary should have at least 1 item after validation, not 0", id="no-kpis"),
    pytest.param(GOOD.replace("    metric: sessions", "    metric: sessions: total"),
                 "not valid YAML at line 6: mapping values are not allowed here", id="yaml-line"),
    pytest.param(GOOD.replace("  sessions:", "\tsessions:"),
                 "not valid YAML at line 5: found character '\\t' that cannot start any token", id="yaml-tab"),
    pytest.param("- sources\n- kpis\n", "expected a mapping with `sources:` and `kpis:` at the top", id="a-list"),
    pytest.param("", "expected a mapping with `sources:` and `kpis:` at the top", id="empty"),
]


@pytest.mark.parametrize(("text", "message"), BAD_CASES)
def test_bad_config_gives_one_exact_line(text: str, message: str) -> None:
    error = _error(text)
    assert error == f"{ORIGIN}: {message}"
    assert "\n" not in error


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: no such config file; check the --config path"


def test_missing_default_file_says_how_to_give_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPIWATCH_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError) as info:
        load_config()
    assert str(info.value) == f"{tmp_path / 'gone.yaml'}: no such config file; pass --config FILE or set KPIWATCH_CONFIG"


def test_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value) == f"{tmp_path}: cannot read (Is a directory)"


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "kpiwatch.yaml"
    path.write_text(_sessions("level: 2"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: kpis.sessions.level: Input should be less than 1 (got 2)"


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "from-env.yaml"
    path.write_text(GOOD, encoding="utf-8")
    monkeypatch.setenv("KPIWATCH_CONFIG", str(path))
    assert set(load_config().kpis) == {"sessions", "conversion_rate"}


# --------------------------------------------------------------------------- ${VAR}


@pytest.mark.parametrize(
    ("line", "env", "field", "value"),
    [
        ("metric: ${KPIWATCH_T_METRIC}", {"KPIWATCH_T_METRIC": "orders"}, "metric", "orders"),
        ("metric: web_${KPIWATCH_T_METRIC}", {"KPIWATCH_T_METRIC": "orders"}, "metric", "web_orders"),
        ("metric: ${KPIWATCH_T_A}_${KPIWATCH_T_B}", {"KPIWATCH_T_A": "a", "KPIWATCH_T_B": "b"}, "metric", "a_b"),
        ("metric: ${KPIWATCH_T_METRIC}", {"KPIWATCH_T_METRIC": "x: [y"}, "metric", "x: [y"),  # not re-parsed
        ("metric: $KPIWATCH_T_METRIC", {"KPIWATCH_T_METRIC": "orders"}, "metric", "$KPIWATCH_T_METRIC"),
        ("metric: orders  # ${KPIWATCH_T_UNSET}", {}, "metric", "orders"),  # comments are not expanded
        ("metric: orders\n    level: ${KPIWATCH_T_LEVEL}", {"KPIWATCH_T_LEVEL": "0.95"}, "level", 0.95),
    ],
)
def test_env_expansion(
    monkeypatch: pytest.MonkeyPatch, line: str, env: dict[str, str], field: str, value: object
) -> None:
    monkeypatch.delenv("KPIWATCH_T_UNSET", raising=False)
    for key, item in env.items():
        monkeypatch.setenv(key, item)
    config = parse_config(GOOD.replace("metric: sessions", line), origin=ORIGIN)
    assert getattr(config.kpi("sessions"), field) == value


def test_unset_env_var_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KPIWATCH_T_UNSET", raising=False)
    assert _error(GOOD.replace("metric: sessions", "metric: ${KPIWATCH_T_UNSET}")) == (
        f"{ORIGIN}: ${{KPIWATCH_T_UNSET}} is used but not set in the environment; export KPIWATCH_T_UNSET=..."
    )


# --------------------------------------------------------------------------- the shipped files


@pytest.mark.parametrize("name", ["kpiwatch.yaml", "kpiwatch.example.yaml"])
def test_shipped_config_validates(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = CONFIG_DIR / name
    if not path.exists():
        pytest.skip(f"{path} does not exist (yet)")
    # Secrets are `${VAR}`: give every one a dummy value so only the structure is judged.
    for var in set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text(encoding="utf-8"))):
        monkeypatch.setenv(var, f"dummy-{var.lower()}")
    config = load_config(path)
    assert config.kpis
    assert all(kpi.source in config.sources for kpi in config.kpis.values())


def test_demo_config_is_the_documented_demo() -> None:
    config = load_config(CONFIG_DIR / "kpiwatch.yaml")
    assert (config.timezone, config.country) == ("Europe/Amsterdam", "NL")
    assert config.sources["default"].type == "demo"
    assert {"sessions", "conversion_rate"} <= set(config.kpis)


# --------------------------------------------------------------------------- regressions (found in review)


def test_recursive_alias_is_a_config_error() -> None:
    assert _error("x: &loop [*loop]\n" + GOOD).startswith(f"{ORIGIN}: ")


def test_control_character_error_is_one_line() -> None:
    error = _error(GOOD.replace("metric: sessions", "metric: sess\x07ions"))
    assert "\n" not in error


def test_duplicate_kpi_is_a_config_error() -> None:
    _error(GOOD + "  sessions:\n    metric: visits\n")


def test_for_periods_beyond_the_check_window_is_a_config_error() -> None:
    _error(_sessions("for_periods: 10"))  # check_window defaults to 7


# --------------------------------------------------------------------------- property: only ConfigError

_SCALARS = (
    st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.floats() | st.text(max_size=12)
    | st.sampled_from(["demo", "up", "down", "D", "h", "auto", "ets", "0.95", "${KPIWATCH_T_UNSET}", "${", "$"])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
_KPI = st.dictionaries(st.sampled_from([*KPIConfig.model_fields, "bogus"]), _VALUES, max_size=5)
_CONFIGS = st.fixed_dictionaries(
    {
        "sources": st.just({"default": {"type": "demo"}}) | _VALUES,
        "kpis": st.dictionaries(st.text(min_size=1, max_size=6), _KPI | _VALUES, max_size=3),
    },
    optional={
        "timezone": st.sampled_from(["UTC", "Europe/Amsterdam", "Mars/Olympus", "", "../etc"]) | _VALUES,
        "country": _VALUES,
        "extra": _VALUES,
    },
)
_PROPERTY = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _only_config_errors(text: str) -> None:
    try:
        result = parse_config(text, origin=ORIGIN)
    except ConfigError as exc:
        assert str(exc).startswith(f"{ORIGIN}: ")
    else:
        assert isinstance(result, Settings)


@_PROPERTY
@given(config=_CONFIGS)
def test_random_configs_raise_only_config_error(config: dict) -> None:
    _only_config_errors(yaml.safe_dump(config))


@_PROPERTY
@given(text=st.text(max_size=200))
def test_random_text_raises_only_config_error(text: str) -> None:
    _only_config_errors(text)


@_PROPERTY
@given(lines=st.lists(st.sampled_from(GOOD.splitlines() + ["  x: [", "- a", "    level: .nan", "  !!binary x",
                                                           "    model: &m prophet", "    unit: *m", ": :"]),
                      max_size=12))
def test_shuffled_config_lines_raise_only_config_error(lines: list[str]) -> None:
    _only_config_errors("\n".join(lines) + "\n")



@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://bi/{dashboard_id}?k={kpi}", "placeholder(s) {dashboard_id}; allowed: {kpi}, {segment}, {period}"),
        ("https://bi/?p={\"df1\":1}", "placeholder(s)"),
        ("https://bi/{kpi", "write a literal brace as"),
    ],
)
def test_dashboard_url_placeholders_are_checked_when_the_config_loads(url, message):
    from forecaster.settings import ConfigError, parse_config

    text = "sources: {default: {type: demo}}\nalerting: {dashboard_url: '" + url.replace("'", "''") + "'}\nkpis: {sessions: {metric: sessions}}\n"
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(text)


def test_a_good_dashboard_url_loads():
    from forecaster.settings import parse_config

    settings = parse_config("sources: {default: {type: demo}}\nalerting: {dashboard_url: 'https://bi/{kpi}?s={segment}&d={period}&x={{y}}'}\n"
                            "kpis: {sessions: {metric: sessions}}\n")
    assert settings.alerting.dashboard_url.endswith("{{y}}")


TWO_ROUTES_ONE_CHANNEL = """\
sources: {default: {type: demo}}
alerting:
  routes:
    - channel: "#alerts"
    - {channel: "#alerts", kpis: [cpa, roas]}
    - {channel: "#paid", kpis: [roas]}
kpis:
  cpa: {ratio: {numerator: ad_cost, denominator: conversions}, good: down}
  roas: {ratio: {numerator: revenue, denominator: ad_cost}}
"""


def test_two_routes_to_one_channel_list_each_alert_once_there():
    """Issue 17 #2: a catch-all route and a KPI route to the same channel gave "4 anomalies"
    with each alert twice in the one message."""
    from alerting import alert, report

    from alerts.incidents import alert_key, plan_cycle

    config = parse_config(TWO_ROUTES_ONE_CHANNEL)
    assert config.alerting.channels_for("roas", [], "critical") == ["#alerts", "#paid"]
    alerts = [alert("cpa", {}), alert("roas", {})]
    plan = plan_cycle(report(alerts), config, {}, [], datetime(2025, 12, 11, 7, tzinfo=timezone.utc), charts=True)
    messages = {m.channel: m for m in plan.items if m.kind == "message"}
    # cpa and roas share ad_cost: one incident, one card per channel, each alert once in it
    assert messages["#alerts"].payload["alert_keys"] == [alert_key(a) for a in alerts]
    assert messages["#alerts"].text.startswith("kpiwatch incident: cpa and 1 related")
    assert messages["#paid"].payload["alert_keys"] == [alert_key(a) for a in alerts]  # the incident, whole
    charts = [i for i in plan.items if i.kind == "chart"]
    assert sorted(c.channel for c in charts) == ["#alerts", "#alerts", "#paid", "#paid"]


_DEMO = "sources: {default: {type: demo}}\n"
_ONE = "kpis:\n  sessions: {metric: sessions}\n"
_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f'{c}: &{c} [{",".join(["*" + p] * 9)}]\n' for p, c in zip("abcdefgh", "bcdefghi")) + _DEMO + _ONE


@pytest.mark.parametrize(
    "content,fragment",
    [
        (b"sources: {default: {type: demo}}\nkpis:\n  s\xe9ssions: {metric: sessions}\n",
         "not UTF-8 text (byte 0xe9 at offset 42); save it as UTF-8"),
        (_DEMO + "kpis:\n  sessions: {metric: sessions, tags: " + "[" * 2000 + "]" * 2000 + "}\n",
         "nested more than 50 levels deep"),
        (_DEMO + "kpis:\n  ? [a, b]\n  : {metric: sessions}\n", "a key is a list or a map; keys are plain names"),
        (_DEMO + "kpis:\n  {a: 1}: {metric: sessions}\n", "a key is a list or a map"),
        (_DEMO + "kpis:\n  x: {catalog: [a]}\n", "kpis.x.catalog: give the name of a catalogue KPI, not list"),
        (_DEMO + "kpis:\n  x: {catalog: {a: 1}}\n", "kpis.x.catalog: give the name of a catalogue KPI, not dict"),
        (_DEMO + "kpis:\n  sessions: {metric: sessions, schedule: every 99999999999999999999 seconds}\n",
         "the interval is longer than a year"),
        ("state: postgresql://u:p@h:abc/db\n" + _DEMO + _ONE, "state: the URL (postgresql://...) does not parse"),
        ("sources:\n  default: {type: sql, url: 'postgresql://u:p@h:abc/db', table: t}\n" + _ONE,
         "sources.default.url: the URL (postgresql://...) does not parse"),
        (_DEMO + "alerting: {repeat_hours: 1e12}\n" + _ONE, "alerting.repeat_hours: Input should be less than or equal to 8784"),
        (_DEMO + "alerting: {dashboard_url: 'https://bi/{kpi:d}'}\n" + _ONE, "placeholder {kpi:d} has a format"),
        (_DEMO + "kpis:\n  r: {ratio: {numerator: sessions, denominator: sessions}}\n",
         "kpis.r.ratio: ratio of 'sessions' over itself is always 1"),
        (_DEMO + 'kpis:\n  "ses\\0sions": {metric: sessions}\n', "holds the control character '\\x00'"),
        (_DEMO + "daemon: {job_timeout_seconds: 1e308}\n" + _ONE, "daemon.job_timeout_seconds: Input should be less than"),
        (_DEMO + "kpis:\n  sessions: {metric: sessions, no_data_after_hours: .inf}\n",
         "kpis.sessions.no_data_after_hours: Input should be a finite number"),
        (_DEMO + "kpis:\n  sessions: {metric: sessions, min_volume: .nan}\n", "Input should be a finite number"),
        (_BOMB, "expands to more than 100,000 values through aliases"),
        ("# " + "x" * 1_000_001 + "\n" + _DEMO + _ONE, "larger than 1,000,000 bytes"),
    ],
    ids=["non-utf8", "nested-2000", "list-key", "map-key", "list-catalog", "map-catalog", "huge-interval",
         "state-port", "sql-port", "repeat-1e12", "dashboard-format", "self-ratio", "nul-name", "timeout-1e308",
         "no-data-inf", "nan", "alias-bomb", "huge-file"],
)
def test_fuzzed_configs_that_crashed_are_one_config_error(tmp_path, content, fragment):
    """Issue 17 #12: these raised UnicodeDecodeError, RecursionError, TypeError (unhashable),
    OverflowError or ValueError, passed `validate` and then failed at alert time or in every
    daemon job, or (the alias bomb) took 11 s and 426 MiB. Now: one ConfigError line, at once."""
    import time

    path = tmp_path / "k.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    began = time.perf_counter()
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert time.perf_counter() - began < 2.0
    message = str(refused.value)
    assert fragment in message and "\n" not in message, message
