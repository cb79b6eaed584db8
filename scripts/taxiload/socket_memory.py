"""scripts/socket_memory: where the server's memory per idle WebSocket goes.

The real app (``create_app``, Sanic's server with our ``GuardedProtocol``, uvloop, PostgreSQL and Redis) runs in
this process with ``tracemalloc`` on; a client process opens N idle driver sockets. Between a snapshot taken after
a warm-up batch and one taken with the N sockets open, every allocation still alive is grouped by its traceback and
by the component that made it, and divided by N. The RSS of this process is read at the same two points, minus what
tracemalloc itself holds, so what the traces cannot see (C allocations outside Python's allocators, malloc's own
overhead) shows as the difference. Python objects are counted by type too (gc-tracked ones only).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

from taxiload.harness import REPO, free_port
from taxiload.proc import memory_kib

HERE = Path(__file__).resolve().parent
LIMITS = ("TAXI_SIGNUPS_PER_ADDRESS", "TAXI_LOGIN_ATTEMPTS_PER_ADDRESS", "TAXI_LOGIN_ATTEMPTS_PER_USER")
# Components, first match wins, tried from a traceback's most recent frame outwards: the standard library (asyncio,
# codecs, ...) is never the owner; whoever called it is.
COMPONENTS = (
    ("/taxi/", "taxi"),
    ("sanic/server/websockets/impl.py", "sanic ws (WebsocketImplProtocol)"),
    ("sanic/server/websockets/frame.py", "sanic ws (frame assembler)"),
    ("sanic/server/protocols/", "sanic connection protocol"),
    ("sanic/request", "sanic request"),
    ("sanic/http", "sanic http"),
    ("sanic/", "sanic other"),
    ("/websockets/", "websockets protocol"),
    ("/redis/", "redis"),
    ("/peewee", "peewee"),
)


def component(trace: tracemalloc.Traceback) -> tuple[str, str]:
    """(component, the owning frame as file:line) of an allocation's traceback."""
    for frame in reversed(trace):  # most recent first
        name = frame.filename
        for needle, label in COMPONENTS:
            if needle in name:
                if label == "taxi":
                    label = "taxi " + name.split("/taxi/", 1)[1]
                return label, f"{_short(name)}:{frame.lineno}"
    if len(trace) == 0:
        return "no Python frame (C)", "?"
    return "stdlib/other", f"{_short(trace[-1].filename)}:{trace[-1].lineno}"


def _short(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3", str(REPO) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def type_counts() -> collections.Counter[str]:
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


def rss_kib() -> int:
    return int(memory_kib([os.getpid()])["rss"] or 0)


class Client:
    """The client process: one line of JSON per command on its stdin, one per answer on its stdout."""

    def __init__(self, url: str, accounts: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "socket_memory.py"), "--client", url, str(accounts)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=os.environ | {"PYTHONPATH": str(HERE.parent)},
        )

    async def call(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = await asyncio.to_thread(self.proc.stdout.readline)
        if not line:
            raise RuntimeError(f"the client process ended (exit {self.proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


async def settle(seconds: float, connections: set[Any], expected: int) -> None:
    """Wait ``seconds``, then until the server holds ``expected`` connections (closed ones are torn down in the
    background), then collect garbage."""
    await asyncio.sleep(seconds)
    for _ in range(300):
        if len(connections) == expected:
            break
        await asyncio.sleep(0.1)
    else:
        print(f"(the server holds {len(connections)} connections, not {expected})", file=sys.stderr)
    gc.collect()


async def measure(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    from taxi.api.connection import GuardedProtocol
    from taxi.app import create_app
    from taxi.config import Settings

    if args.trace:
        tracemalloc.start(args.frames)
    app = create_app(Settings.from_env(env), name="taxi_socket_memory")
    port = free_port()
    server = await app.create_server(
        host="127.0.0.1", port=port, protocol=GuardedProtocol, return_asyncio_server=True, access_log=False
    )
    assert server is not None
    await server.startup()
    logging.getLogger("sanic.websockets").setLevel(logging.WARNING)  # a line per socket closed
    await server.before_start()
    await server.after_start()
    await server.start_serving()
    client = Client(f"http://127.0.0.1:{port}", args.accounts)
    try:
        await client.call(cmd="accounts")
        await client.call(cmd="open", n=min(200, args.sockets))  # first-use allocations are not per socket
        await client.call(cmd="close")
        await settle(args.hold, server.connections, 0)
        before = (rss_kib(), _traced_overhead(), type_counts(), tracemalloc.take_snapshot() if args.trace else None)
        opened = (await client.call(cmd="open", n=args.sockets))["opened"]
        await settle(args.hold, server.connections, opened)
        after = (rss_kib(), _traced_overhead(), type_counts(), tracemalloc.take_snapshot() if args.trace else None)
        await client.call(cmd="close")
        await asyncio.sleep(1.0)
    finally:
        client.close()
        await server.before_stop()
        await server.close()  # type: ignore[misc]
        await server.after_stop()
    return report(args, opened, before, after)


def _traced_overhead() -> int:
    return tracemalloc.get_tracemalloc_memory() if tracemalloc.is_tracing() else 0


def report(args: argparse.Namespace, n: int, before: Any, after: Any) -> dict[str, Any]:
    rss0, over0, types0, snap0 = before
    rss1, over1, types1, snap1 = after
    result: dict[str, Any] = {
        "sockets": n,
        # tracemalloc's own memory grows with every live allocation it traces: that is not the server's
        "rss_bytes_per_socket": ((rss1 - rss0) * 1024 - (over1 - over0)) / n,
        "types_per_socket": {
            t: (types1[t] - types0.get(t, 0)) / n for t in types1 if abs(types1[t] - types0.get(t, 0)) >= n / 2
        },
    }
    if snap0 is not None:
        stats = [s for s in snap1.compare_to(snap0, "traceback") if s.size_diff]
        by_component: collections.Counter[str] = collections.Counter()
        blocks: collections.Counter[str] = collections.Counter()
        by_line: collections.Counter[tuple[str, str]] = collections.Counter()
        for stat in stats:
            label, where = component(stat.traceback)
            by_component[label] += stat.size_diff
            blocks[label] += stat.count_diff
            by_line[(label, where)] += stat.size_diff
        result["traced_bytes_per_socket"] = sum(by_component.values()) / n
        result["components"] = {k: (v / n, blocks[k] / n) for k, v in by_component.most_common()}
        result["lines"] = {f"{k[0]} | {k[1]}": v / n for k, v in by_line.most_common(args.top)}
        result["tracebacks"] = [
            (s.size_diff / n, s.count_diff / n, s.traceback.format(most_recent_first=True))
            for s in sorted(stats, key=lambda s: -s.size_diff)[: args.top]
        ]
    return result


def print_report(result: dict[str, Any], args: argparse.Namespace) -> None:
    n = result["sockets"]
    print(f"\n{n} idle driver sockets ({args.accounts} driver accounts)")
    print(f"  RSS of the server process, per socket (minus tracemalloc's own): {result['rss_bytes_per_socket']:8.0f} B")
    if "components" not in result:
        print("  (run without --no-trace for the breakdown)")
    else:
        traced = result["traced_bytes_per_socket"]
        print(f"  traced by tracemalloc, per socket:                               {traced:8.0f} B")
        print("\n  bytes/socket  blocks/socket  component")
        for label, (size, count) in result["components"].items():
            if abs(size) >= 8:
                print(f"  {size:12.0f}  {count:13.1f}  {label}")
        print("\n  bytes/socket  allocated at (owning frame)")
        for where, size in result["lines"].items():
            print(f"  {size:12.0f}  {where}")
        if args.tracebacks:
            print("\n  largest tracebacks:")
            for size, count, lines in result["tracebacks"]:
                print(f"  {size:8.0f} B {count:5.1f} blocks")
                for line in lines:
                    if line.strip().startswith("File"):
                        print("      " + line.strip())
    print("\n  objects/socket  type (gc-tracked objects, changes of at least 0.5 per socket)")
    for name, per in sorted(result["types_per_socket"].items(), key=lambda kv: -kv[1]):
        print(f"  {per:14.2f}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/socket_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=2000, help="idle driver sockets to open (default 2000)")
    parser.add_argument("--accounts", type=int, default=10, help="driver accounts the sockets share (default 10)")
    parser.add_argument("--frames", type=int, default=8, help="frames kept per traceback (default 8)")
    parser.add_argument("--top", type=int, default=25, help="lines and tracebacks listed (default 25)")
    parser.add_argument("--hold", type=float, default=2.0, help="seconds idle before each snapshot (default 2)")
    parser.add_argument("--tracebacks", action="store_true", help="also print the largest tracebacks in full")
    parser.add_argument("--no-trace", dest="trace", action="store_false", help="RSS and object counts only")
    parser.add_argument("--json", type=Path, help="also write the result as JSON")
    args = parser.parse_args(argv)
    import uvloop

    sys.path.insert(0, str(REPO))  # the server runs in this process

    from taxiload.database import ScratchDatabase

    with tempfile.TemporaryDirectory(prefix="taxi-socket-memory-") as tmp:
        lifted = dict.fromkeys(LIMITS, "1000000")
        with ScratchDatabase("memory", Path(tmp), env=lifted | {"TAXI_ACCESS_TOKEN_LIFETIME": "3600"}) as db:
            result = uvloop.run(measure(args, db.env))
    print_report(result, args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


# --- the client process -------------------------------------------------------------------------------------------


async def client_main(base: str, accounts: int) -> None:
    from taxiload.accounts import make_accounts
    from taxiload.ws_client import close_all, open_many

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tokens: list[str] = []
    conns: list[Any] = []
    while line := await reader.readline():
        command = json.loads(line)
        answer: dict[str, Any] = {}
        if command["cmd"] == "accounts":
            made = await asyncio.to_thread(make_accounts, base, "driver", accounts, "Memory")
            tokens = [a.access for a in made]
        elif command["cmd"] == "open":
            ws = base.replace("http://", "ws://") + "/taxi/?token="
            urls = [ws + tokens[i % len(tokens)] for i in range(command["n"])]
            got = await open_many(urls, 100, lambda conn, payload: None)
            conns.extend(got["conns"])
            answer = {"opened": len(got["conns"]), "failures": dict(got["failures"])}
        elif command["cmd"] == "close":
            answer = {"aborted": await close_all(conns)}
            conns = []
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        import uvloop

        uvloop.run(client_main(sys.argv[2], int(sys.argv[3])))
    else:
        sys.exit(main())
