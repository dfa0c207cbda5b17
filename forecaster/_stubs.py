"""TEMPORARY stand-ins until the executor and state-packing branches merge (deleted then)."""
from __future__ import annotations

import os
import pickle
import zlib
from concurrent.futures import ProcessPoolExecutor
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


class Executor:
    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        self._pool: ProcessPoolExecutor | None = None

    def map(self, function, items, *, timeout=None, progress=None):
        if self.workers <= 1 or len(items) <= 1:
            out = []
            for item in items:
                out.append(function(item))
                if progress:
                    progress(len(out), len(items))
            return out
        self._pool = self._pool or ProcessPoolExecutor(self.workers)
        futures = [self._pool.submit(function, item) for item in items]
        out = []
        for f in futures:
            out.append(f.result(timeout))
            if progress:
                progress(len(out), len(items))
        return out

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown()


def make_executor(config: Any = None, workers: int | None = None) -> Executor:
    return Executor(workers)
