"""Lossless compact codecs for the detector's state (`forecaster.detect.engine.State`).

The daemon stores every series' state each cycle (10,000 series: every byte and microsecond is
paid 10,000 times), so the python lists of floats, the flags and the recent judgements are
kept as packed arrays rather than pickled object by object. Every codec here is exact: a
decoded float is the same float bit for bit (NaN and -0.0 included), a decoded Timestamp has
the same value, unit and tz, so a decoded state judges exactly as the original. A shortcut (a
column equal to another one, evenly spaced periods) is only taken after checking that it
reproduces the values. A judgement's fields are stored as their annotated types (float64,
bool, int64, str), which is what the engine gives them.
"""

from __future__ import annotations

import dataclasses
import operator
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd

from forecaster.types import Judgement

FLOAT = np.dtype("<f8")
INT = np.dtype("<i8")
JUDGEMENT_FIELDS = tuple(f.name for f in dataclasses.fields(Judgement))
# The column kind of each Judgement field, from its annotation: how the column is packed.
_KINDS = {"pd.Timestamp": "stamp", "float": "float", "bool": "flag", "int": "int", "str": "text"}
JUDGEMENT_KINDS = tuple(_KINDS.get(str(f.type), "object") for f in dataclasses.fields(Judgement))
STAMP_CACHE_SIZE = 100_000  # Timestamps kept for reuse: the periods all series of a cycle share
INDEX_CACHE_SIZE = 256  # model histories' indexes kept for reuse (the same dates for every series)
OVERLAP_TRIES = 8  # candidate ends of a model's history in the cleaned values (a flat stretch has many)
_STAMPS: dict[tuple[int, str, Any], pd.Timestamp] = {}
_INDEXES: dict[tuple[int, int, str, str, Any], pd.DatetimeIndex] = {}
_UNIT = operator.attrgetter("unit")
_TZ = operator.attrgetter("tzinfo")
_VALUE = operator.attrgetter("value")


# -- floats and flags ---------------------------------------------------------------------------


def pack_floats(values: Iterable[float] | np.ndarray) -> bytes:
    """Little-endian float64 bytes of `values` (a list or deque of python floats, or an array)."""
    if isinstance(values, list | np.ndarray):
        return np.asarray(values, FLOAT).tobytes()
    return np.fromiter(values, FLOAT).tobytes()


def unpack_floats(data: bytes) -> list[float]:
    """The python floats `pack_floats` packed."""
    return np.frombuffer(data, FLOAT).tolist()


def pack_flags(values: Sequence[bool]) -> tuple[int, bytes]:
    """(count, bits) of a list of bools."""
    return len(values), np.packbits(np.asarray(values, dtype=bool)).tobytes()


def unpack_flags(packed: tuple[int, bytes]) -> list[bool]:
    count, bits = packed
    return np.unpackbits(np.frombuffer(bits, np.uint8), count=count).astype(bool).tolist()


def pack_like(values: np.ndarray, reference: np.ndarray) -> tuple[str, bytes, bytes] | bytes:
    """Float64 `values` as the positions and values where they differ bit for bit from
    `reference` (a guess of them: the raw values for the cleaned ones, which agree but where an
    anomaly was pulled back or a gap filled); plain float64 bytes when that does not pay or the
    lengths differ."""
    if len(values) != len(reference):
        return values.tobytes()
    where = np.flatnonzero(values.view(INT) != reference.view(INT))
    if 10 * len(where) >= 8 * len(values):
        return values.tobytes()
    kind = "<u2" if len(values) <= 1 << 16 else "<i8"
    return kind, where.astype(kind).tobytes(), values[where].tobytes()


def unpack_like(packed: tuple[str, bytes, bytes] | bytes, reference: np.ndarray) -> np.ndarray:
    """The float64 array `pack_like` packed against `reference` (not changed)."""
    if not isinstance(packed, tuple):
        return np.frombuffer(packed, FLOAT)
    kind, where, values = packed
    out = reference.copy()
    out[np.frombuffer(where, kind)] = np.frombuffer(values, FLOAT)
    return out


# -- periods -------------------------------------------------------------------------------------


def stamp(ns: int, unit: str, tz: Any) -> pd.Timestamp:
    """The Timestamp of `ns` (nanoseconds since the epoch, UTC) in `unit` and `tz`, shared with
    every earlier call for the same one (Timestamps are immutable): the 10,000 series of a daemon
    cycle judge the same periods, so their states decode to the same few Timestamp objects."""
    key = (ns, unit, tz)
    found = _STAMPS.get(key)
    if found is None:
        if len(_STAMPS) >= STAMP_CACHE_SIZE:
            _STAMPS.clear()
        found = _STAMPS[key] = pd.Timestamp(ns, tz=tz).as_unit(unit)
    return found


def pack_stamp(period: pd.Timestamp) -> tuple[int, str, Any]:
    return period.value, period.unit, period.tz


def unpack_stamp(packed: tuple[int, str, Any]) -> pd.Timestamp:
    return stamp(*packed)


def pack_stamps(periods: Sequence[pd.Timestamp]) -> tuple[Any, ...]:
    """Periods of one unit and timezone as ("even", unit, tz, first ns, step ns, count) when
    evenly spaced (a state's recent periods are consecutive), else ("ns", unit, tz, int64 ns
    bytes); periods of mixed units or zones are kept as they are."""
    if not periods or set(map(type, periods)) != {pd.Timestamp} or len(set(map(_UNIT, periods))) != 1:
        return ("list", list(periods))
    unit, tz = periods[0].unit, periods[0].tz
    if not all(map(operator.is_, map(_TZ, periods), repeat(tz))):  # (identity: hashing a zone is slow)
        return ("list", list(periods))
    ns = np.fromiter(map(_VALUE, periods), INT, len(periods))
    steps = np.diff(ns)
    if not len(steps) or np.all(steps == steps[0]):
        return ("even", unit, tz, int(ns[0]), int(steps[0]) if len(steps) else 0, len(ns))
    return ("ns", unit, tz, ns.tobytes())


def unpack_stamps(packed: tuple[Any, ...]) -> list[pd.Timestamp]:
    kind = packed[0]
    if kind == "list":
        return list(packed[1])
    if kind == "even":
        _, unit, tz, first, step, count = packed
        ns: Iterable[int] = range(first, first + step * count, step) if step else [first] * count
    else:
        _, unit, tz, data = packed
        ns = np.frombuffer(data, INT).tolist()
    get = _STAMPS.get
    found = [get((n, unit, tz)) for n in ns]
    if None in found:
        found = [stamp(n, unit, tz) for n in ns]
    return found


# -- strings and small ints ----------------------------------------------------------------------


def pack_texts(values: Sequence[str]) -> tuple[Any, ...]:
    """A column of a few distinct strings (a judgement's reason, direction, model, notice):
    ("one", text), ("two", first, second, bits: which one), ("codes", table, uint8 codes),
    or ("all", the strings) when there are more than 255."""
    table = list(dict.fromkeys(values))
    if len(table) == 1:
        return ("one", table[0])
    if len(table) == 2:
        bits = np.fromiter(map(operator.ne, values, repeat(table[0])), bool, len(values))
        return ("two", table[0], table[1], (len(values), np.packbits(bits).tobytes()))
    if len(table) > 255:
        return ("all", list(values))
    codes = {text: k for k, text in enumerate(table)}
    return ("codes", table, bytes(codes[v] for v in values))


def unpack_texts(packed: tuple[Any, ...], count: int) -> list[str]:
    kind = packed[0]
    if kind == "one":
        return [packed[1]] * count
    if kind == "two":
        pair = (packed[1], packed[2])
        return [pair[flag] for flag in unpack_flags(packed[3])]
    if kind == "all":
        return list(packed[1])
    table = packed[1]
    return [table[c] for c in bytes(packed[2])]


def pack_ints(values: Sequence[int]) -> tuple[bytes, bytes] | None:
    """The positions (uint32) and int64 values of the non-zero ints; None when all are 0 (a
    judgement's run length is 0 but on an alert)."""
    if not any(values):
        return None
    where = [k for k, v in enumerate(values) if v]
    return np.asarray(where, "<u4").tobytes(), np.asarray([values[k] for k in where], INT).tobytes()


def unpack_ints(packed: tuple[bytes, bytes] | None, count: int) -> list[int]:
    out = [0] * count
    if packed is not None:
        for k, v in zip(np.frombuffer(packed[0], "<u4").tolist(), np.frombuffer(packed[1], INT).tolist(), strict=True):
            out[k] = v
    return out


# -- judgements ----------------------------------------------------------------------------------


def pack_judgements(judgements: deque[Judgement], raw: np.ndarray) -> dict[str, Any]:
    """The judgements as packed columns, those of a kind together (one array of floats, one of
    bits): a deque of 90 judgements holds 1,260 values, and per-column overhead counts. Two float
    columns are packed against a guess (`pack_like`): `actual` against the tail of `raw` (the
    state's raw values, one per period as the judgements), `lower` against expected - (upper -
    expected), which is the band's lower edge three times in four."""
    count = len(judgements)
    # A judgement's instance dict holds its fields in their order (its __init__ sets them so,
    # and so does `unpack_judgements`): reading it is twice as fast as a getattr per field.
    rows = [tuple(j.__dict__.values()) for j in judgements]
    try:
        table = dict(zip(JUDGEMENT_FIELDS, zip(*rows, strict=True), strict=True)) if rows else {}
    except ValueError:  # a judgement with an attribute of its own
        table = {}
    if not rows or len(table) != len(JUDGEMENT_FIELDS) or tuple(judgements[0].__dict__) != JUDGEMENT_FIELDS:
        return {"objects": list(judgements), "maxlen": judgements.maxlen}
    by_kind: dict[str, list[str]] = {}
    for name, kind in zip(JUDGEMENT_FIELDS, JUDGEMENT_KINDS, strict=True):
        by_kind.setdefault(kind, []).append(name)
    names = by_kind.get("float", [])
    floats = dict(zip(names, np.array([table[name] for name in names], FLOAT).reshape(len(names), count)))
    guessed = {}
    for name in names:
        guess = _guess(name, floats, raw, count)
        if guess is not None and isinstance(packed := pack_like(floats[name], guess), tuple):
            guessed[name] = packed
    plain = [name for name in names if name not in guessed]
    flags = by_kind.get("flag", [])
    return {
        "count": count,
        "maxlen": judgements.maxlen,
        "stamp": {name: pack_stamps(table[name]) for name in by_kind.get("stamp", [])},
        "float": (plain, np.array([floats[name] for name in plain], FLOAT).tobytes()),
        "guessed": guessed,
        "flag": (flags, np.packbits(np.array([table[name] for name in flags], bool)).tobytes()),
        "int": {name: pack_ints(table[name]) for name in by_kind.get("int", [])},
        "text": {name: pack_texts(table[name]) for name in by_kind.get("text", [])},
        "object": {name: list(table[name]) for name in by_kind.get("object", [])},
    }


def _guess(name: str, floats: dict[str, np.ndarray], raw: np.ndarray, count: int) -> np.ndarray | None:
    """What a float column of the judgements is likely to be, from the other float columns and
    the state's raw values (None: no guess)."""
    if name == "actual" and len(raw) >= count:
        return raw[len(raw) - count:]
    if name == "lower" and "expected" in floats and "upper" in floats:
        expected = floats["expected"]
        return expected - (floats["upper"] - expected)
    return None


def unpack_judgements(columns: dict[str, Any], raw: np.ndarray) -> deque[Judgement]:
    if "objects" in columns:
        return deque(columns["objects"], maxlen=columns["maxlen"])
    count = columns["count"]
    plain, data = columns["float"]
    floats = dict(zip(plain, np.frombuffer(data, FLOAT).reshape(len(plain), count)))
    for name, packed in columns["guessed"].items():  # after the columns their guess is made of
        guess = _guess(name, floats, raw, count)
        if guess is None:
            raise ValueError(f"the judgements' {name} column is packed against a guess that cannot be made")
        floats[name] = unpack_like(packed, guess)
    flags, bits = columns["flag"]
    values: dict[str, Any] = {name: column.tolist() for name, column in floats.items()}
    values.update(zip(flags, np.unpackbits(np.frombuffer(bits, np.uint8), count=len(flags) * count)
                      .astype(bool).reshape(len(flags), count).tolist()))
    values.update((name, unpack_stamps(packed)) for name, packed in columns["stamp"].items())
    values.update((name, unpack_ints(packed, count)) for name, packed in columns["int"].items())
    values.update((name, unpack_texts(packed, count)) for name, packed in columns["text"].items())
    values.update(columns["object"])
    # Judgement is a frozen dataclass: its __init__ sets each field through object.__setattr__,
    # several times the cost of filling the instance dict, for 90 judgements per state.
    new, fields, out = object.__new__, JUDGEMENT_FIELDS, deque(maxlen=columns["maxlen"])
    for row in zip(*(values[name] for name in fields), strict=True):
        judgement = new(Judgement)
        judgement.__dict__.update(zip(fields, row))
        out.append(judgement)
    return out


# -- the model -----------------------------------------------------------------------------------


def pack_model(model: Any, clean: np.ndarray) -> tuple[Any, ...]:
    """`model` as ("state", class, its state without its histories, the histories) when it
    pickles the default way (a class, its __getstate__, no __reduce__ of its own: every
    registered model), a history being a float Series on a regular DatetimeIndex (ETS's `y_`)
    kept as its index's (start, length, freq, unit, tz) and its values, those also found in
    `clean` (the state's cleaned values: a model is fitted on them) as a slice of it. Any other
    model as ("object", model), for the pickle."""
    kind = type(model)
    if (model is None or kind.__reduce_ex__ is not object.__reduce_ex__ or kind.__reduce__ is not object.__reduce__
            or hasattr(kind, "__getnewargs_ex__") or hasattr(kind, "__getnewargs__") or hasattr(kind, "__slots__")):
        return ("object", model)
    state = model.__getstate__()
    if type(state) is not dict:
        return ("object", model)
    plain, histories, seen = {}, {}, {}
    for name, value in state.items():
        if type(value) is pd.Series and (packed := _pack_history(value, clean)) is not None:
            histories[name] = ("same", seen[id(value)]) if id(value) in seen else packed  # Prophet's y_ is fitted_y_
            seen[id(value)] = name
        else:
            plain[name] = value
    return ("state", kind, plain, histories)


def unpack_model(packed: tuple[Any, ...], clean: np.ndarray) -> Any:
    if packed[0] == "object":
        return packed[1]
    _, kind, state, histories = packed
    for name, history in histories.items():
        state[name] = state[history[1]] if history[0] == "same" else _unpack_history(history, clean)
    model = kind.__new__(kind)
    if hasattr(model, "__setstate__"):
        model.__setstate__(state)
    else:
        model.__dict__.update(state)
    return model


def _pack_history(series: pd.Series, clean: np.ndarray) -> tuple[Any, ...] | None:
    index = series.index
    if type(index) is not pd.DatetimeIndex or index.freq is None or series.dtype != FLOAT or series.attrs or not len(index):
        return None
    key = (int(index.asi8[0]), len(index), index.freqstr, index.unit, index.tz)
    return ("series", key, series.name, *_overlap(np.ascontiguousarray(series.to_numpy()), clean))


def _unpack_history(packed: tuple[Any, ...], clean: np.ndarray) -> pd.Series:
    _, key, name, prefix, start, stop = packed
    values = np.frombuffer(prefix, FLOAT)
    values = np.concatenate([values, clean[start:stop]]) if stop > start else values.copy()
    return pd.Series(values, index=_regular_index(key), name=name, copy=False)


def _overlap(values: np.ndarray, clean: np.ndarray) -> tuple[bytes, int, int]:
    """(the leading values not found in `clean`, start, stop): the longest tail of `values` that
    is, bit for bit, the slice clean[start:stop] (a model's history ends some periods before the
    state's last value)."""
    bits, reference = values.view(INT), clean.view(INT)
    if len(bits) and len(reference):
        # The last few places only: a history ends at most `refit_every` periods before the state's end.
        for end in np.flatnonzero(reference == bits[-1])[::-1][:OVERLAP_TRIES].tolist():
            length = min(end + 1, len(bits))
            if np.array_equal(reference[end + 1 - length:end + 1], bits[len(bits) - length:]):
                return values[:len(bits) - length].tobytes(), end + 1 - length, end + 1
    return values.tobytes(), 0, 0


def _regular_index(key: tuple[int, int, str, str, Any]) -> pd.DatetimeIndex:
    """The DatetimeIndex of (first stamp in its unit, length, freq, unit, tz), shared between the
    states that have the same one (indexes are immutable)."""
    found = _INDEXES.get(key)
    if found is None:
        first, count, freq, unit, tz = key
        if len(_INDEXES) >= INDEX_CACHE_SIZE:
            _INDEXES.clear()
        start = pd.Timestamp(first, unit=unit, tz="UTC").tz_convert(tz).as_unit(unit)
        found = _INDEXES[key] = pd.date_range(start, periods=count, freq=freq, unit=unit)
    return found
