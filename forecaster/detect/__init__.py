"""Detection: the one engine (`engine`), the KPI's rules (`rules`) and the calibration (`calibration`)."""

from __future__ import annotations

from forecaster.detect.engine import Detector, State, history_needed, walk_forward
from forecaster.detect.rules import Rules, guardrail

__all__ = ["Detector", "Rules", "State", "guardrail", "history_needed", "walk_forward"]
