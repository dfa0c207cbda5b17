"""Tests of `forecaster.executor`: the in-process, process-pool and Dask executors give the same
results in item order, and each survives an item raising, the timeout, `cancel()` from another
thread, Ctrl-C and a worker killed by the OS. Dask runs on one `LocalCluster` (2 workers) per module.

The mapped functions live at the top of this module: worker processes import them by name.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_series, with_drop

import forecaster.models  # noqa: F401  (registers the models the config may name)
from forecaster.detect import Detector, walk_forward
from forecaster.executor import (
    DaskExecutor,
    Executor,
    ExecutorCancelled,
    ExecutorUnavailable,
    InProcessExecutor,
    ProcessExecutor,
    WorkerDied,
    make_executor,
)
from forecaster.settings import ConfigError, ExecutorConfig, parse_config
from forecaster.types import BadInputError, Judgement, KPISeries

KINDS = ["in-process", "process", "dask"]
# Dask cannot stop a running task: the long items of a stopped map keep its workers busy this long.
LONG = 4.0
PROMPT = 2.5  # seconds within which a timeout or a cancel must end a map of longer items

# -- functions the workers run ----------------------------------------------------------------------


def square(x: int) -> float:
    return x * x + 0.5


def fail_on_13(x: int) -> int:
    if x == 13:
        raise ValueError(f"item {x} is bad")
    return x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def nap_then(item: tuple[float, int]) -> int:
    time.sleep(item[0])
    return item[1]


def pid(_: object) -> int:
    return os.getpid()


def die(_: object) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


def unpicklable_result(_: object) -> Any:
    return threading.Lock()


def prophet_loggers(_: object) -> list[tuple[int, bool]]:
    return [(logging.getLogger(name).level, logging.getLogger(name).propagate) for name in ("cmdstanpy", "prophet")]


def judge(series: KPISeries) -> list[Judgement]:
    return walk_forward(Detector(), series)


def _series(seed: int) -> KPISeries:
    """200 seeded days with a 40% drop near the end, so there are anomalies to agree on."""
    return KPISeries(f"kpi{seed}", with_drop(make_series(periods=200, seed=seed), 190, 0.4), "D")


# -- executors ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed", reason="the dask extra: pip install 'kpiwatch[dask]'")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                  silence_logs=logging.CRITICAL) as local:
        yield local


@pytest.fixture(scope="module")
def shared_process() -> Iterator[ProcessExecutor]:
    with ProcessExecutor(workers=2) as executor:
        yield executor


@pytest.fixture(scope="module")
def shared_dask(cluster: Any) -> Iterator[DaskExecutor]:
    with DaskExecutor(cluster.scheduler_address) as executor:
        yield executor


@pytest.fixture(params=KINDS)
def executor(request: pytest.FixtureRequest) -> Executor:
    """Each kind, shared within the module (tests that cancel make their own: cancel is for good)."""
    if request.param == "in-process":
        return InProcessExecutor()
    return request.getfixturevalue("shared_process" if request.param == "process" else "shared_dask")


def _fresh(kind: str, request: pytest.FixtureRequest) -> Executor:
    if kind == "in-process":
        return InProcessExecutor()
    if kind == "process":
        made: Executor = ProcessExecutor(workers=2)
    else:
        made = DaskExecutor(request.getfixturevalue("cluster").scheduler_address)
    request.addfinalizer(made.close)
    return made


# -- the same results everywhere ---------------------------------------------------------------------


def test_same_results_in_item_order(executor: Executor) -> None:
    assert executor.map(square, list(range(50))) == [square(x) for x in range(50)]
    assert executor.map(square, []) == []


def test_same_judgements_as_walking_forward_here(executor: Executor) -> None:
    series = [_series(seed) for seed in range(4)]
    expected = [judge(s) for s in series]
    assert any(j.is_anomaly for judgements in expected for j in judgements)  # something to agree on
    # repr: a Judgement may hold NaN, which is never == itself
    assert [repr(judgements) for judgements in executor.map(judge, series)] == [repr(j) for j in expected]


def test_order_is_the_items_not_the_finishing_order(executor: Executor) -> None:
    items = [(0.3, 0)] + [(0.0, k) for k in range(1, 8)]  # the first finishes last
    seen: list[tuple[int, int]] = []
    assert executor.map(nap_then, items, progress=lambda done, total: seen.append((done, total))) == list(range(8))
    assert seen == [(k, 8) for k in range(1, 9)]


def test_workers_are_quiet_and_counted(executor: Executor) -> None:
    quiet = (logging.CRITICAL + 1, False)
    if not isinstance(executor, InProcessExecutor):  # the calling process is the caller's to set up
        assert executor.map(prophet_loggers, [0, 1]) == [[quiet, quiet]] * 2
    assert executor.workers == (1 if isinstance(executor, InProcessExecutor) else 2)


# -- failures -----------------------------------------------------------------------------------------


def test_an_items_exception_is_raised_with_its_message(executor: Executor) -> None:
    with pytest.raises(ValueError) as info:
        executor.map(fail_on_13, list(range(30)))
    assert str(info.value) == "item 13 is bad"
    if isinstance(executor, ProcessExecutor):  # the worker's traceback, for a bug report
        assert "raised in a kpiwatch worker process" in info.value.__notes__[0]
        assert 'in fail_on_13\n    raise ValueError(f"item {x} is bad")' in info.value.__notes__[0]
    assert executor.map(square, [1, 2]) == [1.5, 4.5]  # still works


@pytest.mark.parametrize("kind", ["process", "dask"])
def test_timeout_stops_the_map_and_the_executor_works_afterwards(kind: str, request: pytest.FixtureRequest) -> None:
    executor: Executor = request.getfixturevalue("shared_process" if kind == "process" else "shared_dask")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"stopped after 0\.5 s .* 0 of 2 items done"):
        executor.map(nap, [LONG, LONG], timeout=0.5)
    assert time.monotonic() - started < PROMPT
    assert executor.map(square, list(range(4))) == [square(x) for x in range(4)]


def test_timeout_in_process_is_checked_between_items() -> None:
    with pytest.raises(TimeoutError, match=r"0\.25 s .* 2 of 5 items done"):
        InProcessExecutor().map(nap, [0.2] * 5, timeout=0.25)


@pytest.mark.parametrize("kind", KINDS)
def test_cancel_from_another_thread_stops_the_map_promptly(kind: str, request: pytest.FixtureRequest) -> None:
    executor = _fresh(kind, request)
    items = [0.2] * 20 if kind == "in-process" else [LONG, LONG]  # in-process: checked between items
    threading.Timer(0.5, executor.cancel).start()
    started = time.monotonic()
    with pytest.raises(ExecutorCancelled, match="^cancelled: the executor is stopping"):
        executor.map(nap, items)
    assert time.monotonic() - started < PROMPT
    with pytest.raises(ExecutorCancelled):  # for good: the daemon is stopping
        executor.map(square, [1])


@pytest.mark.parametrize("kind", ["process", "dask"])
def test_cancel_from_a_signal_handler_in_the_mapping_thread(kind: str, request: pytest.FixtureRequest) -> None:
    """The daemon's SIGTERM handler runs in the main thread, which may be the one waiting in map."""
    executor = _fresh(kind, request)
    previous = signal.signal(signal.SIGUSR1, lambda *_: executor.cancel())
    try:
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        started = time.monotonic()
        with pytest.raises(ExecutorCancelled):
            executor.map(nap, [LONG, LONG])
        assert time.monotonic() - started < PROMPT
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_ctrl_c_stops_the_map_and_kills_its_workers() -> None:
    # As in a terminal: a run started in the background (`make test &`, a CI runner) inherits
    # SIGINT ignored, and Python then never raises KeyboardInterrupt.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with ProcessExecutor(workers=2) as executor:
            executor.map(square, [1, 2])  # the workers are up: what is timed is the stop
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
            started = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                executor.map(nap, [LONG, LONG])
            assert time.monotonic() - started < PROMPT
            assert executor.map(square, [3]) == [9.5]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_worker_killed_by_the_os_is_a_clear_error_and_the_pool_recovers() -> None:
    with ProcessExecutor(workers=2) as executor:
        with pytest.raises(WorkerDied, match=r"^a worker process \(pid \d+\) died \(killed by SIGKILL\) while running "
                                             r"item 1 of 1; SIGKILL is often the out-of-memory killer"):
            executor.map(die, [0])
        assert executor.map(square, [1, 2, 3]) == [1.5, 4.5, 9.5]


def test_a_worker_killed_between_maps_is_replaced() -> None:
    with ProcessExecutor(workers=2) as executor:
        before = set(executor.map(pid, list(range(8))))
        victim = before.pop()
        os.kill(victim, signal.SIGKILL)
        time.sleep(0.2)
        after = set(executor.map(pid, list(range(8))))
        assert victim not in after
        assert executor.map(square, list(range(10))) == [square(x) for x in range(10)]


def test_workers_are_replaced_after_max_calls() -> None:
    with ProcessExecutor(workers=1, max_calls=2) as executor:
        pids = executor.map(pid, list(range(6)))
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5]
    assert len(set(pids)) == 3


def test_what_does_not_pickle_is_named(shared_process: ProcessExecutor) -> None:
    with pytest.raises(TypeError, match="cannot send item 1 of 1 to a worker process: .*must be defined at the top "
                                        "level of an importable module"):
        shared_process.map(lambda x: x, [1])
    with pytest.raises(TypeError, match="the result of test_executor.unpicklable_result cannot be sent back"):
        shared_process.map(unpicklable_result, [1])
    assert shared_process.map(square, [2]) == [4.5]


def test_a_pool_nobody_closed_does_not_hang_the_exit(tmp_path: Path) -> None:
    """multiprocessing's exit hook waits for daemonic children after a SIGTERM, which workers ignore."""
    script = tmp_path / "unclosed.py"
    script.write_text("from forecaster.executor import ProcessExecutor\n"
                      "if __name__ == '__main__':\n"
                      "    print(ProcessExecutor(workers=2).map(abs, [-1, -2]))\n")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert (done.returncode, done.stdout) == (0, "[1, 2]\n"), done.stderr


def test_creating_a_process_executor_starts_nothing_and_close_is_idempotent() -> None:
    executor = ProcessExecutor(workers=3)
    assert executor.pids == [] and executor.map(square, []) == [] and executor.pids == []
    executor.close()
    executor.close()
    with pytest.raises(RuntimeError, match="closed"):
        executor.map(square, [1])


# -- Dask on its own ----------------------------------------------------------------------------------


def test_dask_without_an_address_runs_a_local_cluster() -> None:
    pytest.importorskip("distributed")
    with DaskExecutor(workers=1) as executor:
        assert executor.workers == 1
        assert executor.map(square, list(range(5))) == [square(x) for x in range(5)]
    executor.close()  # idempotent


def test_dask_scheduler_that_does_not_answer_is_one_line_naming_it() -> None:
    pytest.importorskip("distributed")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    executor = DaskExecutor(address, connect_timeout=1)
    with pytest.raises(ExecutorUnavailable) as info:
        executor.map(square, [1])
    message = str(info.value)
    assert message.startswith(f"executor.address {address}: no Dask scheduler answered within 1 s")
    assert "start one there (dask scheduler) or fix the address" in message and "\n" not in message
    assert info.value.exit_code == 3


# -- make_executor and the config ----------------------------------------------------------------------

GOOD = """\
sources:
  default: {type: demo}
kpis:
  sessions: {metric: sessions}
"""


def _executor_error(block: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD + f"executor: {block}\n", origin="test.yaml")
    assert info.value.exit_code == 2
    return str(info.value)


def test_executor_config_default_and_dask() -> None:
    assert parse_config(GOOD).executor == ExecutorConfig()
    assert ExecutorConfig().model_dump() == {"type": "local", "address": None, "workers": None, "connect_timeout": 10}
    dask = parse_config(GOOD + "executor: {type: dask, address: tcp://10.0.0.5:8786, connect_timeout: 3}\n").executor
    assert (dask.type, dask.address, dask.connect_timeout) == ("dask", "tcp://10.0.0.5:8786", 3)
    assert parse_config(GOOD + "executor: {workers: 4}\n").executor.workers == 4


@pytest.mark.parametrize(("block", "message"), [
    ("{typ: dask}", "executor.typ: unknown key; allowed here: type, address, workers, connect_timeout"),
    ("{type: spark}", "executor.type: Input should be 'local' or 'dask' (got 'spark')"),
    ("{address: 'tcp://h:8786'}",
     "executor: address is only for type dask (type is local); set `type: dask` or remove address"),
    ("{type: dask, address: 'h:8786'}", ("executor.address: 'h:8786' is not a Dask scheduler address; write "
                                          "tcp://host:port, e.g. tcp://10.0.0.5:8786 (what `dask scheduler` prints)")),
    ("{type: dask, address: 'tcp://h:8786', workers: 4}", ("executor: workers (4) is for a local cluster; with address "
     "tcp://h:8786 the cluster's workers decide (start more with `dask worker`): remove workers")),
    ("{workers: 0}", "executor.workers: Input should be greater than or equal to 1 (got 0)"),
], ids=["typo-key", "bad-type", "address-without-dask", "bad-address",
        "workers-with-address", "no-workers"])
def test_executor_config_mistakes_are_one_line(block: str, message: str) -> None:
    assert _executor_error(block) == f"test.yaml: {message}"


def test_make_executor_builds_what_the_config_asks_for_and_starts_nothing() -> None:
    assert isinstance(make_executor(), ProcessExecutor)
    local = make_executor(ExecutorConfig(workers=3))
    assert isinstance(local, ProcessExecutor) and local.workers == 3
    assert make_executor(ExecutorConfig(workers=3), workers=5).workers == 5
    assert isinstance(make_executor(workers=1), InProcessExecutor)  # "in this process": replay, --workers 1
    assert isinstance(make_executor(ExecutorConfig(), workers=1), InProcessExecutor)
    one = make_executor(ExecutorConfig(workers=1))  # the daemon's config: a process, for the time limit
    assert isinstance(one, ProcessExecutor) and one.workers == 1
    if "distributed" in sys.modules or _importable("distributed"):
        dask = make_executor(ExecutorConfig(type="dask", address="tcp://127.0.0.1:1"))
        assert isinstance(dask, DaskExecutor) and dask.address == "tcp://127.0.0.1:1"  # not connected yet
        dask.close()


def test_dask_type_without_the_dask_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` raises ImportError
    with pytest.raises(BadInputError) as info:
        make_executor(ExecutorConfig(type="dask", address="tcp://10.0.0.5:8786"))
    assert str(info.value) == "executor.type dask needs the dask extra: pip install 'kpiwatch[dask]'"
    assert info.value.exit_code == 2


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True
