"""The soak's load phase: every client connected, the pairs running, the faults injected (--faults), and a clean
stop of all of it."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import httpx
import redis

from taxiload.accounts import Account
from taxiload.harness import PrivatePostgres, PrivateRedis, ServerProcess
from taxiload.soak_client import Client
from taxiload.soak_faults import inject_faults
from taxiload.soak_ledger import Ledger
from taxiload.soak_model import GRACE, HARD_EXTRA, HTTP_TIMEOUT, Pair, mono
from taxiload.soak_pairs import PairLoop
from taxiload.soak_phones import Phones, stored_trips


class Soak(Ledger):
    def __init__(
        self,
        args: argparse.Namespace,
        server: ServerProcess,
        accounts: dict[str, list[Account]],
        private: tuple[PrivatePostgres, PrivateRedis] | None,
        dsn: str,
    ) -> None:
        super().__init__(server.url)
        self.phones = (
            Phones(server.url, accounts["phone"], args.drop_every, lambda: asyncio.to_thread(stored_trips, dsn))
            if args.disconnects
            else None
        )
        self.phone_verdict: dict[str, Any] | None = None
        self.args = args
        self.server = server
        self.private = private  # the private PostgreSQL and Redis under --faults
        self.duration = args.minutes * 60
        self.pairs = [
            Pair(i, Client(self, r, f"rider {i}"), Client(self, d, f"driver {i}", partner=r.id))
            for i, (r, d) in enumerate(zip(accounts["rider"], accounts["driver"], strict=True))
        ]
        self.watchers = [Client(self, w, f"watcher {i}") for i, w in enumerate(accounts["watcher"])]
        self.redis_channels: int | None = None

    def all_clients(self) -> list[Client]:
        return [c for p in self.pairs for c in (p.rider, p.driver)] + self.watchers

    def count_channels(self) -> int | None:
        """Redis channels with a subscriber under this run's prefix (PUBSUB CHANNELS), while every socket is open."""
        env = self.server.env
        try:
            client = redis.Redis.from_url(env["TAXI_REDIS_URL"], socket_timeout=5, socket_connect_timeout=5)
            try:
                return len(client.pubsub_channels(env["TAXI_REDIS_PREFIX"] + "*"))
            finally:
                client.close()
        except redis.RedisError:
            return None

    async def progress(self) -> None:
        every = max(10.0, min(60.0, self.duration / 10))
        while True:
            await asyncio.sleep(every)
            up = sum(c.up.is_set() for c in self.all_clients())
            errors = sum(n for k, n in self.counts.items() if "error" in k or "lost" in k or "timeout" in k)
            print(
                f"  [{self.rel(mono())}] {sum(1 for a in self.acks if a.status == 'REQUESTED')} trips, "
                f"{len(self.acks)} acknowledged states, {errors} error replies or lost requests, "
                f"sockets up {up}/{len(self.all_clients())}, problems {len(self.problems)}",
                flush=True,
            )

    async def main(self) -> None:
        """Connect everyone, run the pairs (and the faults) for the duration, then close everything."""
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        assert main_task is not None
        loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
        self.t0 = mono()
        self.http = httpx.AsyncClient(base_url=self.base, timeout=HTTP_TIMEOUT)
        clients = self.all_clients()
        side: list[asyncio.Task[None]] = []
        pairs: list[asyncio.Task[None]] = []
        try:
            await self.connect(clients)
            self.load_start = mono()
            self.stop_at = self.load_start + self.duration
            print(f"  [{self.rel(mono())}] {len(clients)} sockets ready; load for {self.duration:.0f} s", flush=True)
            side.append(asyncio.create_task(self.progress()))
            if self.private is not None:
                pg, rd = self.private
                assert self.server.proc is not None
                faults = inject_faults(self, self.duration, self.server.proc.pid, pg, rd)
                side.append(asyncio.create_task(faults, name="faults"))
            loops = [PairLoop(self, p, self.args.think) for p in self.pairs]
            pairs = [asyncio.create_task(pl.run(), name=f"pair {pl.pair.idx}") for pl in loops]
            if self.phones is not None:
                await self.phones.start()
                until = loop.time() + self.stop_at - mono()
                pairs.append(asyncio.create_task(self.phones.run(until, self.args.think), name="phones"))
            await self.finish(pairs, side)
            await asyncio.sleep(GRACE)  # broadcasts in flight
            if self.phones is not None:
                self.phone_verdict = await self.phones.verdict()
            self.redis_channels = await asyncio.to_thread(self.count_channels)
        finally:
            await self.close(clients, side + pairs)
            loop.remove_signal_handler(signal.SIGTERM)

    async def connect(self, clients: list[Client]) -> None:
        for client in clients:
            client.task = asyncio.create_task(client.keep_connected(), name=client.label)
        ready = await asyncio.wait_for(asyncio.gather(*(c.wait_up(mono() + 30) for c in clients)), timeout=35)
        if not all(ready):
            down = [c.label for c, ok in zip(clients, ready, strict=True) if not ok]
            raise RuntimeError(f"sockets did not connect within 30 s: {down}; see {self.server.log}")

    async def finish(self, pairs: list[asyncio.Task[None]], side: list[asyncio.Task[None]]) -> None:
        """Wait for the pairs (cancelling any still running HARD_EXTRA s after the end), then for the faults."""
        done, pending = await asyncio.wait(pairs, timeout=self.stop_at + HARD_EXTRA - mono())
        for task in pending:
            self.problem(f"{task.get_name()} did not stop within {HARD_EXTRA:.0f} s of the end: cancelled")
            task.cancel()
        for task in done:
            if task.exception() is not None:
                exc = task.exception()
                self.problem(f"{task.get_name()} crashed: {exc!r}")
        self.load_end = mono()
        for task in side:
            if task.get_name() == "faults":
                try:
                    await asyncio.wait_for(task, max(self.stop_at + HARD_EXTRA - mono(), 1))
                except TimeoutError:
                    self.problem("the fault injection did not finish in time")
                except Exception as exc:
                    self.problem(f"the fault injection failed: {exc!r}")

    async def close(self, clients: list[Client], tasks: list[asyncio.Task[None]]) -> None:
        self.closing = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        closers = [c.ws.close() for c in clients if c.ws is not None]
        if closers:
            await asyncio.wait([asyncio.ensure_future(c) for c in closers], timeout=5)
        for client in clients:
            if client.task is not None:
                client.task.cancel()
        await asyncio.gather(*(c.task for c in clients if c.task is not None), return_exceptions=True)
        if self.http is not None:
            await self.http.aclose()
