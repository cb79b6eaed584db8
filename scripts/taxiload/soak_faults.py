"""--faults of the soak: at 30% of the run Redis is stopped for a few seconds and started again, at 60% PostgreSQL,
and at 80% one Sanic worker gets SIGKILL (and it is watched whether Sanic replaces it)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Callable

from taxiload.harness import PrivatePostgres, PrivateRedis, worker_pids
from taxiload.soak_ledger import Ledger
from taxiload.soak_model import OUTAGE, RESTART_WATCH, Fault, mono


async def inject_faults(ledger: Ledger, duration: float, main_pid: int, pg: PrivatePostgres, rd: PrivateRedis) -> None:
    await at(ledger, duration, 0.3)
    await restart(ledger, "redis", "Redis", rd.stop, rd.start)
    await at(ledger, duration, 0.6)
    await restart(ledger, "postgres", "PostgreSQL", pg.stop, pg.start)
    await at(ledger, duration, 0.8)
    await kill_worker(ledger, main_pid)


async def at(ledger: Ledger, duration: float, fraction: float) -> None:
    """Sleep until ``fraction`` of the load phase."""
    await asyncio.sleep(max(ledger.load_start + fraction * duration - mono(), 0))


async def restart(ledger: Ledger, kind: str, name: str, stop: Callable[[], None], start: Callable[[], None]) -> None:
    """Stop a service, keep it down for OUTAGE s, start it again; recorded as a Fault of ``kind``."""
    fault = Fault(kind, mono())
    ledger.faults.append(fault)
    print(f"  [{ledger.rel(mono())}] fault: stopping {name} for {OUTAGE:.0f} s", flush=True)
    await asyncio.to_thread(stop)
    await asyncio.sleep(max(OUTAGE - (mono() - fault.begin), 0))
    await asyncio.to_thread(start)
    fault.back = mono()
    print(f"  [{ledger.rel(mono())}] {name} is back after {fault.outage:.1f} s", flush=True)


async def kill_worker(ledger: Ledger, main_pid: int) -> None:
    """SIGKILL to a random worker, then watch RESTART_WATCH s for Sanic starting a replacement."""
    workers = worker_pids(main_pid)
    if not workers:
        ledger.problem("found no Sanic worker process to kill")
        return
    victim = random.choice(workers)
    fault = Fault("worker", mono())
    os.kill(victim, signal.SIGKILL)
    fault.back = fault.begin  # the other worker serves on: reconnecting is what recovers
    ledger.faults.append(fault)
    print(f"  [{ledger.rel(mono())}] fault: SIGKILL to worker {victim} (workers were {workers})", flush=True)
    deadline = fault.begin + RESTART_WATCH
    while mono() < deadline:
        new = [pid for pid in worker_pids(main_pid) if pid not in workers]
        if new:
            fault.restart = f"restarted by Sanic after {mono() - fault.begin:.1f} s"
            fault.note = f"new worker pid {new[0]}"
            break
        await asyncio.sleep(0.1)
    else:
        fault.restart = "not restarted by Sanic"
        fault.note = f"workers {RESTART_WATCH:.0f} s after the kill: {worker_pids(main_pid)}"
    print(f"  [{ledger.rel(mono())}] killed worker {victim}: {fault.restart} ({fault.note})", flush=True)
