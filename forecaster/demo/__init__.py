"""The demo shop: deterministic data of a Dutch web shop with four known incidents, and their
ground truth (`INCIDENTS`, `QUIET_DAYS`). `forecaster.sources.demo.DemoSource` serves it as a
source; `python -m forecaster.demo.load URL` writes it into a SQL database."""

from __future__ import annotations

from forecaster.demo.shop import (
    CHANNELS,
    DEMO_END,
    DEMO_NOW,
    DEMO_START,
    DEMO_TIMEZONE,
    DEVICES,
    DIMENSIONS,
    HOURLY_DAYS,
    INCIDENTS,
    METRICS,
    QUIET_DAYS,
    SMALL_CHANNEL,
    ExpectedAlert,
    Incident,
    demo_frame,
)

__all__ = ["CHANNELS", "DEMO_END", "DEMO_NOW", "DEMO_START", "DEMO_TIMEZONE", "DEVICES", "DIMENSIONS", "HOURLY_DAYS",
           "INCIDENTS", "METRICS", "QUIET_DAYS", "SMALL_CHANNEL", "ExpectedAlert", "Incident", "demo_frame"]
