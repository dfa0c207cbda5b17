"""Where the per-series work runs: in this thread, in worker processes, or on a Dask cluster.

The daemon judges 10,000+ series a cycle (issue 18). The work per series is a pure function of
(series, state, settings), so it can be shipped anywhere; I/O (sources, the store, Slack) stays in
the calling process. Every executor has one interface:

    results = executor.map(function, items, timeout=900, progress=on_progress)

`function` and `items` must pickle: `function` is a function defined at the top level of an
importable module (a function of `forecaster.pipeline`, not a lambda or a nested function), or a
`functools.partial` of one. On Dask the workers import it by its module path, so they need
kpiwatch installed at the same version.

- `InProcessExecutor`: one item at a time in the calling thread (replay, tests, tiny configs).
- `ProcessExecutor` (the default, `executor: {type: local}`): long-lived worker processes on this
  machine; a hung item is killed at the timeout, a worker is replaced after `max_calls` calls so
  memory stays flat, and a worker the OS killed is replaced on the next call.
- `DaskExecutor` (`executor: {type: dask, address: tcp://host:8786}`, `pip install
  'kpiwatch[dask]'`): the items become Dask tasks on a cluster.
"""

from __future__ import annotations

import atexit
import functools
import logging
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.util  # registers its exit hook now, so ours (`_close_at_exit`) runs before it
import os
import pickle
import queue
import signal
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

from forecaster.types import KPIWatchError

if TYPE_CHECKING:
    from forecaster.settings import ExecutorConfig

T = TypeVar("T")
R = TypeVar("R")

Progress = Callable[[int, int], None]

DEFAULT_MAX_CALLS = 200
DEFAULT_CONNECT_TIMEOUT = 10.0
# How long the calling thread waits at most between looks at the cancel flag. `cancel()` only sets
# the flag (and kills processes): it may run in a signal handler, in the very thread that holds a
# queue's or a pool's lock, so it must take none, and cannot wake the waiting thread itself.
_POLL_SECONDS = 0.5
# Worker threads end within moments of their process being killed; this only bounds a surprise.
_JOIN_SECONDS = 10.0
_CANCELLED = "cancelled: the executor is stopping (cancel() was called); the unfinished items were not run to the end"
# A scheduler's HTTP server (health, metrics) runs even without a dashboard, on port 8787 of every
# interface by default: a local cluster's stays on a free port of this machine only.
_LOCAL_HTTP = {"dashboard_address": "127.0.0.1:0"}
_DASK_EXTRA = "executor.type dask needs the dask extra: pip install 'kpiwatch[dask]'"

class ExecutorCancelled(KPIWatchError):
    """`cancel()` was called (the daemon is stopping): the map in progress, and every later one,
    stops; the items not finished have no result."""


class WorkerDied(KPIWatchError):
    """A worker process died while running an item (the out-of-memory killer, a crash in native
    code). The pool starts a new process on the next call. Exit 3: not the user's input."""

    exit_code = 3


class ExecutorUnavailable(KPIWatchError):
    """The Dask scheduler did not answer, or has no workers. Exit 3: start it, or fix the address."""

    exit_code = 3


class Executor(Protocol):
    """Runs a pure function over items, somewhere; see the module docstring."""

    @property
    def workers(self) -> int:
        """How many items run at once (to size chunks of work)."""
        ...

    def map(self, function: Callable[[T], R], items: Sequence[T], *, timeout: float | None = None,
            progress: Progress | None = None) -> list[R]:
        """`[function(item) for item in items]`, in item order.

        The first item to raise has its exception raised here (same type and message) and the
        remaining work is stopped. timeout: seconds for the whole map (default None: no limit),
        then TimeoutError naming the seconds and the running work is stopped. progress(done,
        total) is called in the calling thread as items finish."""
        ...

    def cancel(self) -> None:
        """Stop for good, from any thread or a signal handler (the daemon's SIGTERM): the map in
        progress raises ExecutorCancelled promptly (within half a second), and so does every later
        one. Takes no lock."""
        ...

    def close(self) -> None:
        """Release the workers (processes, the cluster connection); idempotent."""
        ...


def make_executor(config: ExecutorConfig | None = None, workers: int | None = None) -> Executor:
    """The executor the config asks for (default: `ProcessExecutor` with one worker per core).

    workers: items at once; overrides `config.workers` (default None: the config's, else the
    cores). `workers=1` given here means "in this process" (`InProcessExecutor`: replay, `check
    --workers 1`) unless the config asks for dask; `workers: 1` in the config keeps one worker
    process, so the daemon keeps its time limit. With a Dask scheduler address `workers` is
    ignored: the cluster's workers decide. Nothing starts here: processes start, and a Dask
    scheduler is connected to, on the first `map` (or on `DaskExecutor.connect()`). A dask type
    without the dask extra installed raises BadInputError (exit 2)."""
    if config is not None and config.type == "dask":
        count = workers if workers is not None else config.workers
        return DaskExecutor(config.address, count, connect_timeout=config.connect_timeout)
    if workers == 1:
        return InProcessExecutor()
    return ProcessExecutor(workers if workers is not None else config.workers if config is not None else None)


def _cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS has no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def _workers_given(workers: int | None) -> int:
    """`workers`, else the cores; fewer than 1 is a programming error."""
    if workers is None:
        return _cores()
    if workers < 1:
        raise ValueError(f"workers must be at least 1 (got {workers})")
    return workers


def _timed_out(timeout: float, done: int, total: int) -> TimeoutError:
    return TimeoutError(f"stopped after {timeout:g} s (the map's timeout) with {done} of {total} items done")


def quiet_worker() -> None:
    """Set up a worker process once: Prophet and cmdstanpy log every fit at INFO, which would
    flood the daemon's stderr from N processes."""
    from forecaster.models.prophet import quiet_prophet

    quiet_prophet()


# -- in the calling thread -------------------------------------------------------------------------


class InProcessExecutor:
    """One item at a time in the calling thread: no processes, no pickling.

    A running item cannot be stopped here: the timeout and `cancel()` are checked between items,
    so a hung item hangs the map. Meant for replay (no hung fits, no time to lose), tests and
    tiny configs; the daemon uses `ProcessExecutor`.
    """

    workers = 1

    def __init__(self) -> None:
        self._cancelled = threading.Event()

    def map(self, function: Callable[[T], R], items: Sequence[T], *, timeout: float | None = None,
            progress: Progress | None = None) -> list[R]:
        """See `Executor.map`; the timeout is checked between items."""
        deadline = None if timeout is None else time.monotonic() + timeout
        results: list[R] = []
        for item in items:
            if self._cancelled.is_set():
                raise ExecutorCancelled(_CANCELLED)
            if deadline is not None and time.monotonic() > deadline:
                raise _timed_out(timeout or 0.0, len(results), len(items))
            results.append(function(item))
            if progress is not None:
                progress(len(results), len(items))
        if self._cancelled.is_set():  # cancelled during the last item: its result is not wanted
            raise ExecutorCancelled(_CANCELLED)
        return results

    def cancel(self) -> None:
        """See `Executor.cancel`; the item running now finishes first."""
        self._cancelled.set()

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- worker processes on this machine --------------------------------------------------------------


class _Stopped(Exception):
    """Internal: the map was stopped (error, timeout, cancel) before this item started."""


class _Lost(Exception):
    """Internal: the worker process died while running the item."""

    def __init__(self, pid: int | None, exitcode: int | None) -> None:
        super().__init__(pid, exitcode)
        self.pid, self.exitcode = pid, exitcode


class _Unpicklable(Exception):
    """Internal: `function` or the item does not pickle, so it cannot reach a worker process."""


class _Run:
    """One `map` call's shared state: the next item to hand out, the stop flag, and the outcomes
    the worker threads send to the calling thread."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.stop = threading.Event()
        self.outcomes: queue.Queue[tuple[str, int, Any]] = queue.Queue()
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> int | None:
        """The index of the next item to run, or None when all are handed out or the run stopped."""
        with self._lock:
            if self.stop.is_set() or self._next >= self.total:
                return None
            self._next += 1
            return self._next - 1


class _Worker:
    """One long-lived process that runs one call at a time (the daemon's `Worker`, generalised).

    It is killed when the map it serves stops (a hung fit does not listen) or on `cancel()`, and
    replaced after `max_calls` calls so memory stays flat over months; a dead one is replaced on
    the next call. Only the thread that borrowed it calls `run`; any thread may `kill`.
    """

    def __init__(self, context: Any, max_calls: int) -> None:
        self._context = context
        self._max_calls = max_calls
        self._process: Any = None
        self._conn: Any = None
        self._calls = 0
        self._owner: _Run | None = None  # the map whose item runs now
        self._killed = False  # SIGKILL sent: the process may look alive for a moment still
        self._lock = threading.Lock()  # `kill` comes from other threads

    @property
    def pid(self) -> int | None:
        """The process id, or None before the first call."""
        process = self._process
        return None if process is None else process.pid

    def run(self, function: Callable[[Any], Any], item: Any, owner: _Run,
            cancelled: threading.Event) -> tuple[bool, Any, str]:
        """(ok, value or exception, the worker's traceback text). Raises _Stopped when the map
        stopped before the item started, _Lost when the process died while running it, and the
        pickling error when `function` or `item` do not pickle."""
        for attempt in range(2):
            with self._lock:
                if owner.stop.is_set() or cancelled.is_set():
                    raise _Stopped
                if (self._process is None or self._killed or not self._process.is_alive()
                        or self._calls >= self._max_calls):
                    self._start()
                self._calls += 1
                self._owner = owner
                conn, process = self._conn, self._process
            try:
                try:
                    # pickles before it writes: an item that does not pickle leaves the pipe clean
                    conn.send((function, item))
                except (pickle.PicklingError, TypeError, AttributeError) as exc:
                    raise _Unpicklable(exc) from exc
                except (BrokenPipeError, ConnectionResetError):
                    # died while idle (killed between maps): nothing of the item ran, so start a
                    # fresh process and send it again, once
                    self._reap()
                    if attempt == 0:
                        continue
                    raise _Lost(process.pid, process.exitcode) from None
                try:
                    reply: tuple[bool, Any, str] = conn.recv()
                except (EOFError, OSError):
                    self._reap()
                    raise _Lost(process.pid, process.exitcode) from None
                return reply
            finally:
                with self._lock:
                    self._owner = None
        raise AssertionError("unreachable")  # pragma: no cover

    def kill(self, owner: _Run | None = None) -> None:
        """Kill the process (only while it runs an item of `owner`, when given)."""
        with self._lock:
            if owner is not None and self._owner is not owner:
                return
            if self._process is not None and self._process.is_alive():
                self._process.kill()
                self._killed = True

    def kill_now(self) -> None:
        """Kill the process without taking the lock (for `cancel()`, which may run in a signal
        handler that interrupted the lock's holder). A process started just after this is killed
        by the map's own stop, which sees the cancel within _POLL_SECONDS."""
        self._killed = True
        process = self._process
        if process is not None:
            try:
                process.kill()  # a no-op on a process already reaped
            except (OSError, ValueError, AttributeError):
                pass

    def close(self) -> None:
        """Stop the process (kill: a hung fit does not listen) and release the pipe."""
        with self._lock:
            self._stop_process()

    def _reap(self) -> None:
        """Wait for a dead process (so its exit code is known) and drop it."""
        with self._lock:
            self._stop_process()

    def _start(self) -> None:
        self._stop_process()
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_worker_loop, args=(child,), daemon=True, name="kpiwatch-worker")
        try:
            process.start()
        finally:
            child.close()  # only the worker holds its end: its death reads as EOF here
        self._process, self._conn, self._calls, self._killed = process, parent, 0, False

    def _stop_process(self) -> None:
        process, conn = self._process, self._conn
        if process is not None:
            if process.is_alive():
                process.kill()
            process.join(timeout=_JOIN_SECONDS)
        if conn is not None:
            conn.close()
        self._process = self._conn = None


def _worker_loop(conn: Any) -> None:
    """The worker's side: run each (function, item) received and send back (ok, value, trace)."""
    # Ctrl-C or a group SIGTERM is for the parent, which kills us when it stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    quiet_worker()
    while True:
        try:
            function, item = conn.recv()
        except EOFError:
            return  # the parent is gone
        try:
            reply: tuple[bool, Any, str] = (True, function(item), "")
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
            reply = (False, _portable(exc), traceback.format_exc())
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return
        except Exception as exc:  # noqa: BLE001 - the result does not pickle
            problem = TypeError(f"the result of {_name(function)} cannot be sent back from the worker "
                                f"process: {type(exc).__name__}: {exc}; return plain data (it must pickle)")
            try:
                conn.send((False, problem, ""))
            except Exception:  # noqa: BLE001
                return


def _portable(exc: Exception) -> Exception:
    """`exc` when it survives pickling (its type and message reach the caller), else a
    RuntimeError with both in its message."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - a custom exception whose __init__ takes other arguments
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _name(function: Callable[..., Any]) -> str:
    inner = function.func if isinstance(function, functools.partial) else function
    return f"{getattr(inner, '__module__', '?')}.{getattr(inner, '__qualname__', repr(inner))}"


def _death(lost: _Lost, index: int, total: int) -> WorkerDied:
    code = lost.exitcode
    if code is not None and code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exit code {code}"
    hint = "; SIGKILL is often the out-of-memory killer: give it more memory or fewer executor.workers" \
        if code == -signal.SIGKILL else ""
    return WorkerDied(f"a worker process (pid {lost.pid}) died ({how}) while running item {index + 1} of {total}"
                      f"{hint}; a new one starts on the next call")


def _start_context() -> Any:
    """Workers are forked from a fork server (forking a process with threads, as the daemon is,
    is not safe); spawn where there is none (Windows)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # imported once, in the server, instead of in every new worker
        context.set_forkserver_preload(["forecaster.executor", "forecaster.pipeline"])
        _start_forkserver_deaf_to_ctrl_c()
        return context
    return multiprocessing.get_context("spawn")


def _start_forkserver_deaf_to_ctrl_c() -> None:
    """Start the fork server with SIGINT ignored (the disposition survives its exec). A terminal's
    Ctrl-C reaches the whole process group, and a server still importing its preload would die
    printing a traceback; once running it ignores SIGINT itself. Only the main thread may change
    a handler: from another thread (the daemon's jobs) the server starts on first use as usual,
    where the daemon handles SIGINT itself."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


_open_pools: weakref.WeakSet[ProcessExecutor] = weakref.WeakSet()
_at_exit_registered = False


def _close_at_exit(executor: ProcessExecutor) -> None:
    """Close `executor` when the interpreter exits, if nobody did: multiprocessing's own exit hook
    sends daemonic children SIGTERM and then waits for them, and our workers ignore SIGTERM (it is
    the parent's to handle), so without this an unclosed pool would hang the exit for ever. atexit
    runs hooks last-registered first, so this one, registered after multiprocessing's, runs before it."""
    global _at_exit_registered
    _open_pools.add(executor)
    if not _at_exit_registered:
        atexit.register(_close_open_pools)
        _at_exit_registered = True


def _close_open_pools() -> None:
    for executor in list(_open_pools):
        executor.close()


class ProcessExecutor:
    """Worker processes on this machine, started on the first `map` and reused by later ones.

    workers: processes, so items at once (default None: one per core). max_calls: calls a process
    serves before it is replaced, so memory stays flat (default 200). One thread per process hands
    it items; several threads may `map` at once (the workers are shared). A map that stops (an
    item raised, the timeout, `cancel()`, Ctrl-C) kills the processes still running its items; a
    process that died is replaced on the next call.
    """

    def __init__(self, workers: int | None = None, max_calls: int = DEFAULT_MAX_CALLS) -> None:
        if max_calls < 1:
            raise ValueError(f"max_calls must be at least 1 (got {max_calls})")
        self.workers = _workers_given(workers)
        self.max_calls = max_calls
        self._context: Any = None  # made on the first map: creating an executor starts nothing
        self._pool: list[_Worker] = []
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._closed = False

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (the ones started so far; for tests and logs)."""
        return [pid for pid in (w.pid for w in self._pool) if pid is not None]

    def map(self, function: Callable[[T], R], items: Sequence[T], *, timeout: float | None = None,
            progress: Progress | None = None) -> list[R]:
        """See `Executor.map`. An item that kills its process raises WorkerDied."""
        if self._closed:
            raise RuntimeError("this executor is closed; make a new one")
        if self._cancelled.is_set():
            raise ExecutorCancelled(_CANCELLED)
        if not items:
            return []
        self._ensure_pool()
        run = _Run(len(items))
        threads = [threading.Thread(target=self._feed, args=(run, function, items), daemon=True,
                                    name=f"kpiwatch-executor-{k}") for k in range(min(self.workers, len(items)))]
        try:
            for thread in threads:
                thread.start()
            return self._collect(run, timeout, progress)
        except BaseException:  # an item's error, the timeout, cancel, Ctrl-C: stop its work now
            self._stop(run)
            raise
        finally:
            for thread in threads:
                if thread.ident is not None:
                    thread.join(timeout=_JOIN_SECONDS)

    def cancel(self) -> None:
        """See `Executor.cancel`: every worker process is killed at once (a fit does not listen)."""
        self._cancelled.set()
        for worker in tuple(self._pool):
            worker.kill_now()

    def close(self) -> None:
        """Stop every worker process; idempotent."""
        self._closed = True
        for worker in self._pool:
            worker.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_pool(self) -> None:
        with self._lock:
            if not self._pool:
                _close_at_exit(self)
                self._context = _start_context()
                self._pool = [_Worker(self._context, self.max_calls) for _ in range(self.workers)]
                for worker in self._pool:
                    self._idle.put(worker)

    def _feed(self, run: _Run, function: Callable[[Any], Any], items: Sequence[Any]) -> None:
        """A worker thread: borrow an idle process, run the next item on it, report, repeat."""
        while (index := run.take()) is not None:
            worker = self._borrow(run)
            if worker is None:
                return
            try:
                ok, value, trace = worker.run(function, items[index], run, self._cancelled)
            except _Stopped:
                return
            except _Lost as lost:
                run.outcomes.put(("lost", index, lost))
                return
            except _Unpicklable as exc:
                cause = exc.args[0]
                problem = TypeError(f"cannot send item {index + 1} of {run.total} to a worker process: "
                                    f"{type(cause).__name__}: {cause}; the function must be defined at the top level "
                                    "of an importable module and the items must pickle")
                run.outcomes.put(("failed", index, problem))
                return
            except Exception as exc:  # noqa: BLE001 - no process could be started (no memory, no fork server)
                run.outcomes.put(("failed", index, exc))
                return
            finally:
                self._idle.put(worker)
            if not ok and trace:
                value.add_note(f"raised in a kpiwatch worker process:\n{trace.rstrip()}")
            run.outcomes.put(("done" if ok else "failed", index, value))

    def _borrow(self, run: _Run) -> _Worker | None:
        """An idle worker, or None once the run stopped (another map may hold them all)."""
        while not run.stop.is_set() and not self._cancelled.is_set():
            try:
                return self._idle.get(timeout=0.05)
            except queue.Empty:
                continue
        return None

    def _collect(self, run: _Run, timeout: float | None, progress: Progress | None) -> list[Any]:
        """In the calling thread: gather the outcomes in item order; raise the first failure, the
        timeout or the cancel."""
        deadline = None if timeout is None else time.monotonic() + timeout
        results: list[Any] = [None] * run.total
        done = 0
        while done < run.total:
            wait = _POLL_SECONDS if deadline is None else min(_POLL_SECONDS, deadline - time.monotonic())
            if wait <= 0:
                raise _timed_out(timeout or 0.0, done, run.total)
            try:
                kind, index, value = run.outcomes.get(timeout=wait)
            except queue.Empty:
                kind, index, value = "waiting", -1, None
            if self._cancelled.is_set():  # a process killed by cancel() reads as lost: say why
                raise ExecutorCancelled(_CANCELLED)
            if kind == "failed":
                raise value
            if kind == "lost":
                raise _death(value, index, run.total)
            if kind == "done":
                results[index] = value
                done += 1
                if progress is not None:
                    progress(done, run.total)
        return results

    def _stop(self, run: _Run) -> None:
        """No new item of `run` starts; the processes running its items are killed."""
        run.stop.set()
        for worker in self._pool:
            worker.kill(owner=run)


# -- a Dask cluster ----------------------------------------------------------------------------------


class _Box:
    """An item wrapped so Dask hands it to the function as it is: Dask reads a tuple whose first
    element is callable as a task, and looks for futures inside lists, dicts and dataclasses."""

    __slots__ = ("item",)

    def __init__(self, item: Any) -> None:
        self.item = item


_quieted = False


def _dask_call(function: Callable[[Any], Any], box: _Box) -> Any:
    """Runs on a Dask worker: set the worker up once, then the item."""
    global _quieted
    if not _quieted:
        quiet_worker()
        _quieted = True
    return function(box.item)


class DaskExecutor:
    """Items as tasks on a Dask cluster (`pip install 'kpiwatch[dask]'`).

    address: the scheduler, e.g. `tcp://10.0.0.5:8786` (`dask scheduler` prints it). None starts a
        `LocalCluster` of worker processes on this machine, for trying Dask out on one machine
        (it is no faster than `ProcessExecutor` there).
    workers: the local cluster's worker processes, one thread each (default None: one per core);
        ignored with an address, where the cluster's workers decide.
    connect_timeout: seconds to wait for the scheduler, and for a first worker (default 10).

    Nothing connects until the first `map` (or `connect()`). A running task cannot be stopped on
    Dask: after a timeout or `cancel()` the map returns at once, and the tasks already running
    finish on their workers with their results dropped.
    """

    def __init__(self, address: str | None = None, workers: int | None = None,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        try:
            import distributed  # noqa: F401 - only to say now, not at the first map, that it is missing
        except ImportError:
            from forecaster.types import BadInputError

            raise BadInputError(_DASK_EXTRA) from None
        self.address = address
        self._local_workers = _workers_given(workers)
        self.connect_timeout = connect_timeout
        self._client: Any = None
        self._cluster: Any = None
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._closed = False

    @property
    def workers(self) -> int:
        """Tasks the cluster runs at once (its worker threads); connects on first use."""
        if self.address is None:
            return self._local_workers
        threads: dict[str, int] = self.connect().nthreads()
        return max(1, sum(threads.values()))

    def connect(self) -> Any:
        """The `distributed.Client` (connected on first use): ExecutorUnavailable, naming the
        address, when the scheduler does not answer within `connect_timeout`."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this executor is closed; make a new one")
            if self._client is None:
                self._client = self._open()
            return self._client

    def map(self, function: Callable[[T], R], items: Sequence[T], *, timeout: float | None = None,
            progress: Progress | None = None) -> list[R]:
        """See `Executor.map`. A worker that dies on an item is retried by Dask on another
        (`distributed.scheduler.allowed-failures`, default 3), then KilledWorker is raised."""
        if self._cancelled.is_set():
            raise ExecutorCancelled(_CANCELLED)
        if not items:
            return []
        client = self.connect()
        self._wait_for_a_worker(client)
        finished: queue.Queue[Any] = queue.Queue()
        futures = client.map(functools.partial(_dask_call, function), [_Box(item) for item in items], pure=False)
        try:
            for future in futures:
                future.add_done_callback(finished.put)  # runs in Dask's callback thread
            self._collect(futures, finished, timeout, progress)
            return list(client.gather(futures))
        except BaseException:  # an item's error, the timeout, cancel, Ctrl-C: drop the rest
            client.cancel(futures)
            raise

    def cancel(self) -> None:
        """See `Executor.cancel`: the waiting map cancels its outstanding tasks (running ones
        finish on their workers, their results dropped)."""
        self._cancelled.set()

    def close(self) -> None:
        """Disconnect, and stop the local cluster if this executor started one; idempotent."""
        with self._lock:
            self._closed = True
            client, cluster = self._client, self._cluster
            self._client = self._cluster = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> Any:
        from distributed import Client, LocalCluster

        if self.address is None:
            self._cluster = LocalCluster(n_workers=self._local_workers, threads_per_worker=1, processes=True,
                                         dashboard_address=None, scheduler_kwargs=_LOCAL_HTTP,
                                         # an item's error reaches the caller; the worker's own log of it is noise
                                         silence_logs=logging.CRITICAL)
            return Client(self._cluster, set_as_default=False)
        try:
            return Client(self.address, timeout=self.connect_timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:  # distributed's TimeoutError is the builtin one
            raise ExecutorUnavailable(
                f"executor.address {self.address}: no Dask scheduler answered within {self.connect_timeout:g} s "
                f"({type(exc).__name__}); start one there (dask scheduler) or fix the address "
                "(executor.connect_timeout to wait longer)") from None

    def _wait_for_a_worker(self, client: Any) -> None:
        """A scheduler without workers would hold the tasks until the timeout: say so at once."""
        if client.nthreads():
            return
        try:
            client.wait_for_workers(1, timeout=self.connect_timeout)
        except (OSError, TimeoutError):
            raise ExecutorUnavailable(
                f"executor.address {self.address}: the Dask scheduler has no workers (waited "
                f"{self.connect_timeout:g} s); start some: dask worker {self.address}") from None

    def _collect(self, futures: Sequence[Any], finished: queue.Queue[Any], timeout: float | None,
                 progress: Progress | None) -> None:
        """In the calling thread: count finished tasks; raise the first error, the timeout or the cancel."""
        deadline = None if timeout is None else time.monotonic() + timeout
        done = 0
        while done < len(futures):
            wait = _POLL_SECONDS if deadline is None else min(_POLL_SECONDS, deadline - time.monotonic())
            if wait <= 0:
                raise _timed_out(timeout or 0.0, done, len(futures))
            try:
                future = finished.get(timeout=wait)
            except queue.Empty:
                future = None
            if self._cancelled.is_set():
                raise ExecutorCancelled(_CANCELLED)
            if future is None:
                continue
            if future.status == "error":
                raise future.exception()
            if future.status == "cancelled":  # by someone else (another client, a restart)
                raise ExecutorCancelled(f"cancelled: Dask cancelled task {future.key} (a restarted cluster?)")
            done += 1
            if progress is not None:
                progress(done, len(futures))
