"""TEMPORARY stand-ins until the executor and state-packing branches merge (deleted then)."""
from __future__ import annotations

import pickle
import zlib
from typing import Any


class StateFormatError(ValueError):
    pass


def pack_state(state: Any) -> bytes:
    return zlib.compress(pickle.dumps(state, protocol=5), 1)


def unpack_state(blob: bytes) -> Any:
    try:
        return pickle.loads(zlib.decompress(blob))
    except Exception as exc:  # noqa: BLE001
        raise StateFormatError(str(exc)) from None
