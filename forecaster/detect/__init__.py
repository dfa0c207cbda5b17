"""Detection: the one engine (`engine`), the KPI's rules (`rules`), the calibration (`calibration`)
and the compact form of the engine's state (`codec`, behind `pack_state` / `unpack_state`)."""

from __future__ import annotations

from forecaster.detect.engine import (
    Detector,
    State,
    StateFormatError,
    history_needed,
    pack_state,
    unpack_state,
    walk_forward,
)
from forecaster.detect.feedback import SeriesFeedback
from forecaster.detect.rules import Rules, guardrail

__all__ = ["Detector", "Rules", "SeriesFeedback", "State", "StateFormatError", "guardrail", "history_needed", "pack_state",
           "unpack_state", "walk_forward"]
