"""The loopback floor: what the city scenario's frames cost this box when the server does nothing else.

Server processes (picows, the fastest WebSocket library there is for asyncio: its framing and writes are Cython)
share one port. They keep no state but their sockets: each drops the incoming fixes after parsing them, and at
``--rate`` broadcasts per second picks its share of ``--reach`` sockets at random and writes them a frame of
``--frame-bytes``, then, ``--taken-after-ms`` later, a second one (the city's "taken"). The client is the city
scenario's own (the same socket class and the same JSON parse of every frame), with a fix from every socket every
``--fix-interval`` seconds. No database, no Redis, no trip rules: whatever this costs, the taxi server pays too,
on top of its own work. Figures: frames/s written, broadcast -> socket latency, and the CPU of each side, of the
kernel's interrupt work and the idle share of the box.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import time
from array import array
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
import picows
import uvloop

from taxiload.harness import free_port
from taxiload.proc import CORES, box_cpu, cpu_seconds, proc_stat, raise_nofile
from taxiload.ws_city_agents import due
from taxiload.ws_client import READY, Conn, close_all, open_many
from taxiload.ws_common import latency_ms, split

TICK_S = 0.05  # the clients send the fixes due in each tick (as the city's drivers do)


def _frame(stamp_ns: int, kind: str, size: int) -> bytes:
    head = {"type": "echo.message", "data": {"floor": kind, "stamp": stamp_ns, "pad": ""}}
    pad = max(0, size - len(orjson.dumps(head)))
    head["data"]["pad"] = "x" * pad  # type: ignore[index]
    return orjson.dumps(head)


class _ServerSocket(picows.WSListener):  # type: ignore[misc]
    def __init__(self, sockets: list[Any], counts: dict[str, int]) -> None:
        super().__init__()
        self.sockets, self.counts = sockets, counts

    def on_ws_connected(self, transport: Any) -> None:
        self.sockets.append(transport)

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        kind = frame.msg_type
        if kind == picows.WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            if payload == READY:
                transport.send(picows.WSMsgType.TEXT, READY)
            else:
                orjson.loads(payload)  # what any server does with a fix, at the least
                self.counts["in"] += 1
        elif kind == picows.WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: Any) -> None:
        try:
            self.sockets.remove(transport)
        except ValueError:
            pass


def _serve(port: int, arg: dict[str, Any], pipe: Connection) -> None:
    raise_nofile()
    uvloop.run(_server_main(port, arg, pipe))


async def _server_main(port: int, arg: dict[str, Any], pipe: Connection) -> None:
    sockets: list[Any] = []
    counts = {"in": 0, "out": 0}
    server = await picows.ws_create_server(
        lambda _request: _ServerSocket(sockets, counts), "127.0.0.1", port, reuse_port=True, backlog=4096
    )
    pipe.send("listening")
    loop = asyncio.get_running_loop()
    start_ns, deadline_ns = await loop.run_in_executor(None, pipe.recv)
    rng = random.Random(os.getpid())
    share = arg["reach"] / arg["sockets"]
    await asyncio.sleep(max(0.0, (start_ns - time.time_ns()) / 1e9))
    k = 0
    while (due_ns := start_ns + int(k * 1e9 / arg["rate"])) < deadline_ns:
        await asyncio.sleep(max(0.0, (due_ns - time.time_ns()) / 1e9))
        chosen = rng.sample(sockets, min(len(sockets), round(share * len(sockets))))
        loop.call_soon(_broadcast, chosen, _frame(time.time_ns(), "request", arg["frame_bytes"]), counts)
        loop.call_later(
            arg["taken_after_ms"] / 1000, _taken, chosen, arg["frame_bytes"], counts
        )  # as the city's acceptance
        k += 1
    await asyncio.sleep(1.0)
    pipe.send(dict(counts))
    await loop.run_in_executor(None, pipe.recv)  # the clients have closed
    server.close()


def _broadcast(chosen: list[Any], frame: bytes, counts: dict[str, int]) -> None:
    for transport in chosen:
        if not transport.is_disconnected:
            transport.send(picows.WSMsgType.TEXT, frame)
    counts["out"] += len(chosen)


def _taken(chosen: list[Any], size: int, counts: dict[str, int]) -> None:
    _broadcast(chosen, _frame(time.time_ns(), "taken", size), counts)


def _client(urls: list[str], arg: dict[str, Any], pipe: Connection) -> None:
    raise_nofile()
    uvloop.run(_client_main(urls, arg, pipe))


async def _client_main(urls: list[str], arg: dict[str, Any], pipe: Connection) -> None:
    latency = array("q")
    measure = {"from": 1 << 62}

    def on_frame(_: Conn, payload: bytes) -> None:
        data = orjson.loads(payload)["data"]  # the city's drivers parse every frame too
        if data["stamp"] >= measure["from"]:
            latency.append((time.time_ns() - data["stamp"]) // 1000)

    opened = await open_many(urls, arg["concurrency"], on_frame)
    conns: list[Conn] = opened["conns"]
    pipe.send({"opened": len(conns), "failures": dict(opened["failures"])})
    loop = asyncio.get_running_loop()
    start_ns, measure_ns, deadline_ns = await loop.run_in_executor(None, pipe.recv)
    measure["from"] = measure_ns
    fix = orjson.dumps({"type": "update.location", "data": {"lat": 52.5, "lng": 13.4}})
    await asyncio.sleep(max(0.0, (start_ns - time.time_ns()) / 1e9))
    cpu0: float | None = None
    t0, sent = loop.time(), 0
    while time.time_ns() < deadline_ns:
        if cpu0 is None and time.time_ns() >= measure_ns:
            cpu0 = cpu_seconds()
        for i in due(loop.time() - t0, TICK_S, arg["fix_interval"], len(conns)):
            conn = conns[i % len(conns)]
            if not conn.closed:
                conn.send(fix)
                sent += 1
        await asyncio.sleep(TICK_S)
    cpu_s = cpu_seconds() - (cpu0 if cpu0 is not None else cpu_seconds())
    await asyncio.sleep(1.0)
    pipe.send({"latency_us": latency.tobytes(), "cpu_s": cpu_s, "fixes": sent, "closed": sum(c.closed for c in conns)})
    await loop.run_in_executor(None, pipe.recv)
    await close_all(conns)
    pipe.send("closed")


def _cpu(pids: list[int]) -> float:
    return sum(st[1] for pid in pids if (st := proc_stat(pid)) is not None)


def run(args: argparse.Namespace) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    arg = vars(args)
    servers = []
    for _ in range(args.server_procs):
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(port, arg, theirs), daemon=True)
        proc.start()
        servers.append((proc, mine))
    for _, pipe in servers:
        assert pipe.recv() == "listening"
    urls = [f"ws://127.0.0.1:{port}/taxi/" for _ in range(args.sockets)]
    clients = []
    for part in split(urls, args.client_procs):
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_client, args=(part, arg, theirs), daemon=True)
        proc.start()
        clients.append((proc, mine))
    opened = [pipe.recv() for _, pipe in clients]
    sockets = sum(o["opened"] for o in opened)
    print(f"  {sockets} sockets open ({args.server_procs} server and {args.client_procs} client processes)")
    start_ns = time.time_ns() + 1_000_000_000
    measure_ns = start_ns + int(args.warm_up * 1e9)
    deadline_ns = measure_ns + int(args.duration * 1e9)
    for _, pipe in servers:
        pipe.send((start_ns, deadline_ns))
    for _, pipe in clients:
        pipe.send((start_ns, measure_ns, deadline_ns))
    time.sleep(max(0.0, (measure_ns - time.time_ns()) / 1e9))
    server_pids = [p.pid for p, _ in servers if p.pid is not None]
    s0, b0, t0 = _cpu(server_pids), box_cpu(), time.monotonic()
    time.sleep(max(0.0, (deadline_ns - time.time_ns()) / 1e9))
    s1, b1, wall = _cpu(server_pids), box_cpu(), time.monotonic() - t0
    got = [pipe.recv() for _, pipe in clients]
    counts = [pipe.recv() for _, pipe in servers]
    for _, pipe in clients:
        pipe.send("close")
    for _, pipe in clients:
        pipe.recv()
    for _, pipe in servers:
        pipe.send("stop")
    for proc, _ in servers + clients:
        proc.join(10)
    latency = array("q")
    for g in got:
        latency.frombytes(g["latency_us"])
    busy, irq, total = (b1[i] - b0[i] for i in range(3))
    return {
        "sockets": sockets,
        "frames_per_s": len(latency) / args.duration,
        "frames_written": sum(c["out"] for c in counts),
        "fixes_per_s": sum(c["in"] for c in counts) / (args.warm_up + args.duration),
        "latency": latency_ms(latency),
        "server_cpu": 100 * (s1 - s0) / wall,
        "client_cpu": 100 * sum(g["cpu_s"] for g in got) / wall,
        "irq_cpu": 100 * irq / wall,
        "idle_pct": 100 * (1 - busy / max(total, 1e-9)),
        "closed": sum(g["closed"] for g in got),
        "failures": [o["failures"] for o in opened if o["failures"]],
    }


def cli(doc: str) -> None:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=20.0, help="broadcasts per second (each followed by 'taken')")
    parser.add_argument("--reach", type=int, default=750, help="sockets per broadcast (the city's: about 750)")
    parser.add_argument("--frame-bytes", type=int, default=1000, help="a trip frame is about 1,000 bytes")
    parser.add_argument("--taken-after-ms", type=float, default=20.0)
    parser.add_argument("--fix-interval", type=float, default=4.0)
    parser.add_argument("--server-procs", type=int, default=2)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--warm-up", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    raise_nofile()
    r = run(args)
    lat = r["latency"]
    print(
        f"  {r['frames_per_s']:,.0f} frames/s received ({args.rate:g} broadcasts/s x 2 x {args.reach}), "
        f"{r['fixes_per_s']:,.0f} fixes/s in\n"
        f"  broadcast -> socket: p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms\n"
        f"  CPU, % of one core ({CORES} cores): server {r['server_cpu']:.0f}, client {r['client_cpu']:.0f}, "
        f"irq {r['irq_cpu']:.0f}; box idle {r['idle_pct']:.0f}%"
    )
    if r["closed"] or r["failures"]:
        print(f"  !!! {r['closed']} sockets closed during the run; open failures: {r['failures']}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **r}, indent=2))
