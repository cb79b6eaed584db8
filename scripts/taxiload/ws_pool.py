"""bench_ws's client processes: each has its own event loop (uvloop) and carries out the main process's commands,
sent over a pipe, one at a time: open driver sockets, reset and collect their receipts, open and run lifecycle
pairs, close everything."""

from __future__ import annotations

import asyncio
import collections
import multiprocessing
import signal
import threading
import time
import traceback
from typing import Any

import uvloop

from taxiload.proc import cpu_seconds, raise_nofile
from taxiload.ws_agents import Deliveries, LifecycleStats, Pair
from taxiload.ws_city_agents import CityDrivers
from taxiload.ws_client import Conn, close_all, open_many


class ClientProcess(CityDrivers):
    """The commands a client process carries out for the main process, one at a time."""

    def __init__(self) -> None:
        self.conns: list[Conn] = []
        self.deliveries = Deliveries()
        self.pairs: list[Pair] = []
        self.lifecycle = LifecycleStats()
        self.cpu0 = cpu_seconds()

    async def open(self, arg: dict[str, Any]) -> dict[str, Any]:
        """Open driver sockets: arg = {urls, concurrency}."""
        cpu0 = cpu_seconds()
        got = await open_many(arg["urls"], arg["concurrency"], self.deliveries.handler())
        self.conns += got.pop("conns")
        return got | {"opened": len(self.conns), "open_us": got["open_us"].tobytes(), "cpu_s": cpu_seconds() - cpu0}

    async def reset(self, arg: Any) -> dict[str, Any]:
        """Forget what was received so far; the CPU time reported by ``collect`` counts from here."""
        self.deliveries = Deliveries()
        handler = self.deliveries.handler()
        for conn in self.conns:
            conn.count = 0
            conn.handler = conn.on = handler
        self.cpu0 = cpu_seconds()
        return {}

    async def collect(self, arg: dict[str, Any]) -> dict[str, Any]:
        """Wait until every open socket has ``expected`` bench frames, or nothing came for ``quiet`` s."""
        expected, quiet, limit = arg["expected"], arg["quiet"], time.monotonic() + arg["max_wait"]
        last_total, last_change = -1, time.monotonic()
        while time.monotonic() < limit:
            total = len(self.deliveries.latency_us)
            if all(c.count >= expected for c in self.conns if not c.closed):
                break
            if total != last_total:
                last_total, last_change = total, time.monotonic()
            elif time.monotonic() - last_change > quiet:
                break
            await asyncio.sleep(0.02)
        counts = collections.Counter(min(c.count, expected + 1) for c in self.conns)
        return {
            "deliveries": len(self.deliveries.latency_us),
            "latency_us": self.deliveries.latency_us.tobytes(),
            "last_ns": self.deliveries.last_ns,
            "sockets": len(self.conns),
            "closed": sum(c.closed for c in self.conns),
            "close_codes": dict(collections.Counter(c.close_code for c in self.conns if c.closed)),
            "short": sum(n for k, n in counts.items() if k < expected),
            "extra": counts.get(expected + 1, 0),
            "errors": dict(self.deliveries.errors),
            "others": self.deliveries.others,
            "cpu_s": cpu_seconds() - self.cpu0,
        }

    async def close(self, arg: Any) -> dict[str, Any]:
        cpu0 = cpu_seconds()
        aborted = await close_all(self.conns)
        for pair in self.pairs:
            aborted += await close_all([c for c in (pair.rider, pair.driver) if c is not None])
        self.conns, self.pairs = [], []
        return {"aborted": aborted, "cpu_s": cpu_seconds() - cpu0}

    async def lc_open(self, arg: dict[str, Any]) -> dict[str, Any]:
        """Open the sockets of lifecycle pairs: arg = {ws, concurrency, pairs: [(idx, rider id, rider token,
        driver id, driver token)]}. Drivers first, so that every driver is listening before any rider speaks."""
        cpu0 = cpu_seconds()
        self.lifecycle = LifecycleStats()
        self.pairs = [Pair(idx, rid, did, self.lifecycle) for idx, rid, _, did, _ in arg["pairs"]]
        failures: collections.Counter[str] = collections.Counter()
        for role in ("driver", "rider"):
            gate = asyncio.Semaphore(arg["concurrency"])

            async def one(pair: Pair, token: str, role: str = role, gate: asyncio.Semaphore = gate) -> None:
                async with gate:
                    conn = Conn(pair.on_driver if role == "driver" else pair.on_rider)
                    try:
                        await conn.open(f"{arg['ws']}?token={token}")
                    except Exception as exc:
                        failures[f"{role} {type(exc).__name__}: {str(exc)[:80]}"] += 1
                        return
                    setattr(pair, role, conn)

            tokens = {p[0]: (p[2], p[4]) for p in arg["pairs"]}
            await asyncio.gather(*(one(p, tokens[p.idx][role == "driver"]) for p in self.pairs))
        complete = [p for p in self.pairs if p.rider is not None and p.driver is not None]
        return {"pairs": len(complete), "failures": dict(failures), "cpu_s": cpu_seconds() - cpu0}

    async def lc_run(self, arg: dict[str, Any]) -> dict[str, Any]:
        """Run every pair from ``start_ns`` until ``deadline_ns`` (wall clock), then finish what is in flight."""
        await asyncio.sleep(max(0.0, (arg["start_ns"] - time.time_ns()) / 1e9))
        cpu0, stats = cpu_seconds(), self.lifecycle
        stats.driver_frames = 0
        pairs = [p for p in self.pairs if p.rider is not None and p.driver is not None]
        await asyncio.gather(*(p.run(arg["deadline_ns"], arg["step_timeout"]) for p in pairs))
        return {
            "rider_us": stats.rider_us.tobytes(),
            "echo_us": stats.echo_us.tobytes(),
            "reply_us": stats.reply_us.tobytes(),
            "errors": dict(stats.errors),
            "stalls": stats.stalls,
            "completed": stats.completed,
            "in_window": stats.in_window,
            "driver_frames": stats.driver_frames,
            "closed": sum(c.closed for p in pairs for c in (p.rider, p.driver) if c is not None),
            "cpu_s": cpu_seconds() - cpu0,
        }


def client_main(pipe: Any) -> None:
    """Entry point of a client process (forked before any event loop or thread exists in the main process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C and tells us to exit
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise_nofile()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def read_commands() -> None:  # blocking reads in a thread: loop.add_reader would make the pipe non-blocking
            while True:
                try:
                    message = pipe.recv()
                except (EOFError, OSError):
                    message = ("exit", None)
                loop.call_soon_threadsafe(inbox.put_nowait, message)
                if message[0] == "exit":
                    return

        threading.Thread(target=read_commands, name="commands", daemon=True).start()
        worker = ClientProcess()
        while True:
            command, arg = await inbox.get()
            if command == "exit":
                await worker.close(None)
                return
            try:
                pipe.send(await getattr(worker, command)(arg))
            except Exception:
                pipe.send({"exception": traceback.format_exc()})

    uvloop.run(serve())


class Clients:
    """Client processes, each with its own event loop, driven by commands over a pipe."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("fork")
        self.pipes, self.procs = [], []
        for _ in range(count):
            ours, theirs = context.Pipe()
            proc = context.Process(target=client_main, args=(theirs,), daemon=True)
            proc.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(proc)

    def send(self, command: str, args: list[Any]) -> None:
        for pipe, arg in zip(self.pipes, args, strict=True):
            pipe.send((command, arg))

    def receive(self, timeout: float = 300.0) -> list[dict[str, Any]]:
        deadline, results = time.monotonic() + timeout, []
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            try:
                if not pipe.poll(max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(f"a client process did not answer within {timeout:.0f} s")
                result = pipe.recv()
            except (EOFError, OSError):
                proc.join(5)
                raise RuntimeError(f"a client process died (exit code {proc.exitcode})") from None
            if "exception" in result:
                raise RuntimeError(f"a client process failed:\n{result['exception']}")
            results.append(result)
        return results

    def call(self, command: str, args: list[Any] | None = None, timeout: float = 300.0) -> list[dict[str, Any]]:
        self.send(command, args if args is not None else [None] * len(self.pipes))
        return self.receive(timeout)

    def stop(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("exit", None))
            except OSError:
                pass
        for proc in self.procs:
            proc.join(15)
            if proc.is_alive():
                proc.kill()  # only our own child, by its PID
                proc.join(5)

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
