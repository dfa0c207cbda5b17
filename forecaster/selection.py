"""Remembered model choices for `model: auto`, so the short backtest behind a choice runs on a
slow cadence (every `reselect_days`), not at every check.

Kept as one small JSON file in the state folder, written atomically (a crash never leaves half a
file). Keys are series labels such as `conversion_rate[device=mobile]`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

FILE_NAME = "model-choices.json"


@dataclass(frozen=True)
class Selection:
    """auto's choice for one series: the model, its band calibration, and the period it was made at."""

    model: str
    scale: float
    chosen_at: str  # ISO timestamp of the judged period when the choice was made


class SelectionCache:
    """Selections by series label, loaded from and saved to `folder/model-choices.json`."""

    def __init__(self, folder: Path, reselect_days: int) -> None:
        self.path = Path(folder) / FILE_NAME
        self.reselect = pd.Timedelta(days=reselect_days)
        self.entries: dict[str, Selection] = self._load()

    def fresh(self, label: str, period: pd.Timestamp) -> Selection | None:
        """The remembered choice if it was made less than `reselect_days` before `period`."""
        entry = self.entries.get(label)
        if entry is None:
            return None
        age = period - pd.Timestamp(entry.chosen_at)
        return entry if pd.Timedelta(0) <= age < self.reselect else None

    def remember(self, label: str, selection: Selection) -> None:
        self.entries[label] = selection

    def save(self) -> None:
        """Write the file atomically (temp file + rename in the same folder)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {label: asdict(entry) for label, entry in sorted(self.entries.items())}
        handle, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".model-choices-", suffix=".json")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(payload, file, indent=1)
        os.replace(temp, self.path)

    def _load(self) -> dict[str, Selection]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return {label: Selection(**entry) for label, entry in raw.items()}
        except FileNotFoundError:
            return {}
        except (ValueError, TypeError, AttributeError):  # damaged file: choose afresh, never crash
            return {}
