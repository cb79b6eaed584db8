"""The main process's care of Sanic's workers: a worker that dies is logged and replaced, and a stop (SIGINT or
SIGTERM, to the main process or its whole process group, at any moment) ends the server promptly with exit 0.

Sanic 25.12.1 does neither by itself: its manager never restarts a server worker that died, spins for ever on a
signal that comes before every worker has reported ready, and waits without limit for a worker that does not
exit. ``install`` (a ``main_process_ready`` listener) takes over the manager's signal handlers and three of its
steps; ``protect_sync_manager`` keeps the manager's shared-state process alive through a group-wide SIGTERM.
Written against Sanic's WorkerManager internals: ``WRITTEN_FOR_SANIC`` pins the release (a test checks it).
Imports Sanic only inside functions: the launcher records an early stop before anything heavy is imported.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.managers import State, SyncManager  # type: ignore[attr-defined]
from types import FrameType
from typing import Any

log = logging.getLogger("taxi.supervise")

WRITTEN_FOR_SANIC = "25.12.1"
RESTART_BACKOFF = 1.0  # seconds between two replacements of the same worker (a worker that dies at start-up)
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Early:
    """A stop asked for before the manager's workers were started (the launcher's first handler records it)."""

    signum: int | None = None


EARLY = _Early()


def record_early_stop(signum: int, _frame: FrameType | None) -> None:
    """Signal handler for the start-up: remember the stop; the supervisor carries it out once it can."""
    EARLY.signum = signum


def sanic_version() -> str:
    import sanic

    return str(sanic.__version__)


class Supervisor:
    """Wraps one WorkerManager (main process only)."""

    def __init__(self, manager: Any, grace: float) -> None:
        self.manager = manager
        self.grace = grace  # how long workers get to stop before they are killed
        self.started = False
        self.stopping = False
        self.requested: int | None = None  # a signal to act on at the next safe point
        self._restarted: dict[str, float] = {}

    def attach(self) -> None:
        manager = self.manager
        manager.start = self._wrap_after(manager.start, self._after_start)
        manager._sync_states = self._wrap_after(manager._sync_states, self._between_polls)
        manager.wait_for_ack = self._wait_for_ack
        for signum in _STOP_SIGNALS:
            signal.signal(signum, self._on_signal)

    @staticmethod
    def _wrap_after(original: Callable[[], None], after: Callable[[], None]) -> Callable[[], None]:
        def wrapped() -> None:
            original()
            after()

        return wrapped

    def _after_start(self) -> None:
        self.started = True
        if EARLY.signum is not None:
            self.stop(EARLY.signum)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        """Only note it: the handler runs wherever the main thread is, possibly half-way through a request to the
        shared state, and a second request from here would garble that connection. The monitor loop acts on it
        within 0.1 s (``_between_polls``, ``_wait_for_ack``)."""
        if not self.started:
            EARLY.signum = signum  # no worker to stop yet: done right after they start
        elif self.requested is None:
            self.requested = signum

    def _act_on_signal(self) -> None:
        if self.requested is not None and not self.stopping:
            self.stop(self.requested)

    def _between_polls(self) -> None:
        self._act_on_signal()
        self._replace_dead()

    def stop(self, signum: int) -> None:
        """Stop every worker once; a later signal changes nothing (the deadline already guarantees the end)."""
        if self.stopping:
            log.info("received %s while stopping; the workers are killed in %.0f s at most", _name(signum), self.grace)
            return
        self.stopping = True
        threading.Thread(target=self._kill_stragglers, name="stop-deadline", daemon=True).start()
        self._kill_unready()
        self.manager.shutdown_signal(signum, None)

    def _kill_unready(self) -> None:
        """A worker that has not reported ready yet holds nothing worth a clean stop (no connection was accepted),
        and on a busy machine it can take seconds to get there: end it now rather than wait for it."""
        try:
            states = {name: dict(state) for name, state in self.manager.worker_state.items()}
        except (OSError, EOFError):  # the shared-state process is gone (a SIGKILL to the group)
            return
        for process in list(self.manager.transient_processes):
            if states.get(process.name, {}).get("state") == "ACKED":
                continue
            if not process.is_alive():
                # Already gone: typically a signal to the whole process group reached it first, while it imported the
                # application (a KeyboardInterrupt traceback of its own above). Said so the traceback is explained.
                log.info(
                    "worker %s [%s] was still starting: it had already ended (exit code %s)",
                    process.name,
                    process.pid,
                    process.exitcode,
                )
                continue
            log.info("worker %s [%s] was still starting: ending it at once", process.name, process.pid)
            try:
                os.kill(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _kill_stragglers(self) -> None:
        time.sleep(self.grace)
        for process in list(self.manager.processes):
            if process.is_alive():
                log.warning(
                    "worker %s [%s] did not stop within %.0f s: killing it", process.name, process.pid, self.grace
                )
                try:
                    os.kill(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _replace_dead(self) -> None:
        """Runs in the manager's monitor loop, every 0.1 s: start a new process for each server worker that died."""
        from sanic.worker.constants import ProcessState

        manager = self.manager
        if self.stopping or manager._shutting_down:
            return
        for process in list(manager.transient_processes):
            if process.state in (ProcessState.RESTARTING, ProcessState.IDLE, ProcessState.NONE) or process.is_alive():
                continue
            now = time.monotonic()
            if now - self._restarted.get(process.name, 0.0) < RESTART_BACKOFF:
                continue
            self._restarted[process.name] = now
            log.error(
                "worker %s [%s] died (exit code %s); starting a replacement",
                process.name,
                process.pid,
                process.exitcode,
            )
            manager.restart(process_names=[process.name])
            log.info("worker %s replaced by [%s]", process.name, process.pid)

    def _wait_for_ack(self) -> None:
        """Sanic's wait for every worker's "ready", which also ends when a stop began (Sanic's loops for ever then:
        it keeps re-reading its own shutdown message, and the stopped workers never report)."""
        manager = self.manager
        misses = 0
        while not manager._all_workers_ack():
            self._act_on_signal()
            if manager._shutting_down or self.stopping:
                return
            if manager.monitor_subscriber.poll(0.1):
                message = manager.monitor_subscriber.recv()
                if message is None:  # our own stop's message: leave it for the monitor loop, which then ends
                    manager.monitor_publisher.send(None)
                    return
                if message == "__TERMINATE_EARLY__":
                    log.error("a worker exited during start-up; stopping the server (see the error above)")
                    self.stop(signal.SIGTERM)
                    return
                manager.monitor_publisher.send(message)
                continue
            misses += 1
            if misses > manager.THRESHOLD:
                log.error("not every worker reported ready within %.0f s; stopping", manager.THRESHOLD / 10)
                self.stop(signal.SIGTERM)
                return


def install(app: Any, grace: float) -> None:
    """Supervise the manager of ``app`` (call from a ``main_process_ready`` listener)."""
    Supervisor(app.manager, grace).attach()


class _ThreadManager(SyncManager):
    """Sanic's shared-state manager served by a thread of the main process instead of a process of its own.

    Its process, started with the default signal handling, was killed by a signal to the group while it was still
    starting (before it could ignore anything), and the main process then failed ("worker process failed", exit 1).
    A thread cannot be signalled away; workers reach it through its socket as they would reach the process.
    """

    def start_serving(self) -> None:
        server: Any = self.get_server()
        self._address = server.address
        # The server's accept loop alone (its serve_forever would also take over stdout and end with sys.exit).
        server.stop_event = threading.Event()  # what serve_forever would have made: each client's loop reads it
        threading.Thread(target=server.accepter, name="shared-state", daemon=True).start()
        self._set_state(State.STARTED)

    def shutdown(self) -> None:  # type: ignore[override]
        # Called by Sanic as the main process ends; its daemon threads end with it.
        self._set_state(State.SHUTDOWN)

    def _set_state(self, value: int) -> None:
        self._state.value = value  # type: ignore[attr-defined]  # BaseManager's own state, checked by dict()


def _protected_manager() -> SyncManager:
    manager = _ThreadManager()
    manager.start_serving()
    return manager


def protect_sync_manager() -> None:
    """Make Sanic keep its shared state (``multiprocessing.Manager()``) in a thread of the main process.

    Its own process died of a SIGTERM or SIGINT to the process group, and the main process then failed with "Broken
    pipe" (exit 1) instead of stopping. Idempotent; affects only the process that calls ``Sanic.serve``.
    """
    from sanic.mixins import startup

    startup.Manager = _protected_manager


def protect_worker_stop() -> None:
    """In a worker: once it is stopping, a second SIGINT or SIGTERM changes nothing.

    A signal to the process group reaches each worker twice: directly, and from the manager stopping it. Sanic's
    worker removes its signal handlers when its loop stops, which puts back Python's defaults: the second signal
    then raised KeyboardInterrupt in the middle of the clean-up ("Event loop stopped before Future completed"),
    the ``after_server_stop`` listeners never ran, and the worker hung at exit on the database threads they would
    have closed. This replaces Sanic's ``_run_server_forever`` with the same steps, except that the handlers are
    swapped for ones that do nothing (no moment without a handler) instead of removed. Idempotent.
    """
    from sanic.server import runners

    runners._run_server_forever = _run_server_forever


def _ignore() -> None:
    return None


def _run_server_forever(loop: Any, before_stop: Any, after_stop: Any, cleanup: Any, unix: Any, pid: int) -> None:
    """Sanic 25.12.1's ``sanic.server.runners._run_server_forever``, but for the handlers (see above)."""
    from sanic.log import server_logger
    from sanic.server import runners
    from sanic.server.socket import remove_unix_socket

    try:
        server_logger.info("Worker ready [%s]", pid)
        loop.run_forever()
    finally:
        server_logger.info("Stopping worker [%s]", pid)
        for signum in _STOP_SIGNALS:
            try:
                loop.add_signal_handler(signum, _ignore)
            except (NotImplementedError, OSError, RuntimeError):
                pass
        runners._run_shutdown_coro(loop, before_stop)
        if cleanup:
            cleanup()
        runners._run_shutdown_coro(loop, after_stop)
        remove_unix_socket(unix)
        loop.close()
        server_logger.info("Worker complete [%s]", pid)


def _name(signum: int) -> str:
    return signal.Signals(signum).name
