"""``scripts/bench_photos``: photo changes per second with a real 12 Mpx JPEG, the longest WebSocket echo round trip
meanwhile (measured from a process of its own), and the bytes of a trip card's avatar before and after sizes."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import websockets
from PIL import Image, JpegImagePlugin

from taxiload.database import ScratchDatabase
from taxiload.harness import REPO, ServerProcess
from taxiload.seaweed import PrivateSeaweed

PASSWORD_FOR_LOAD = "bench-photos-pw"
ECHO_EVERY = 0.02  # seconds between two echoes of one socket
ECHO_SOCKETS = 6  # spread over the workers by the kernel
STALL_S = 0.02  # the bound on a blocked event loop
SCRAPE_EVERY = 0.25  # seconds between two reads of the workers' blocked-loop histogram


def phone_photo() -> bytes:
    """A 4000 x 3000 JPEG (12 Mpx) with noise in it, so it weighs what a phone's does (3-5 MB at quality 85)."""
    noise = Image.effect_noise((4000, 3000), 30)
    ramp = Image.linear_gradient("L").resize((4000, 3000))
    image = Image.merge("RGB", (noise, ramp, noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def stored_before_sizes(upload: bytes) -> int:
    """What the server stored (and every client downloaded) before sizes: the upload re-encoded at full size with
    its own quantisation tables, metadata removed."""
    with Image.open(io.BytesIO(upload)) as image:
        out = io.BytesIO()
        image.save(out, "JPEG", qtables=image.quantization, subsampling=JpegImagePlugin.get_sampling(image))
        return len(out.getvalue())


async def accounts(base: str, count: int) -> list[str]:
    """``count`` riders signed up and logged in; their access tokens."""
    tokens = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for i in range(count):
            name = f"photo{i}@example.com"
            form = {"username": name, "password1": PASSWORD_FOR_LOAD, "password2": PASSWORD_FOR_LOAD, "group": "rider"}
            assert (await http.post("/api/sign_up/", json=form)).status_code == 201
            reply = await http.post("/api/log_in/", json={"username": name, "password": PASSWORD_FOR_LOAD})
            tokens.append(reply.json()["access"])
    return tokens


async def change_photos(base: str, tokens: list[str], photo: bytes, seconds: float) -> dict[str, Any]:
    """Each token's client replaces its photo again and again for ``seconds``; count what succeeded."""
    done: list[float] = []
    failed: dict[int, int] = {}
    deadline = time.monotonic() + seconds

    async def client(token: str) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            while time.monotonic() < deadline:
                start = time.monotonic()
                reply = await http.put(
                    "/api/me/photo/",
                    headers={"Authorization": f"Bearer {token}"},
                    files={"photo": ("phone.jpg", photo, "image/jpeg")},
                )
                if reply.status_code == 200:
                    done.append(time.monotonic() - start)
                else:
                    failed[reply.status_code] = failed.get(reply.status_code, 0) + 1

    started = time.monotonic()
    await asyncio.gather(*(client(token) for token in tokens))
    elapsed = time.monotonic() - started
    return {
        "changes": len(done),
        "per_second": len(done) / elapsed,
        "latency_p50_ms": 1000 * statistics.median(done) if done else None,
        "latency_max_ms": 1000 * max(done) if done else None,
        "failed": failed,
    }


def echo_probe(ws_base: str, token: str, seconds: float, results: Any) -> None:
    """In a process of its own: ECHO_SOCKETS sockets each sending an echo every ECHO_EVERY s; round trips, ms."""

    async def one(rtts: list[float]) -> None:
        async with websockets.connect(f"{ws_base}/taxi/?token={token}") as ws:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                start = time.perf_counter()
                await ws.send('{"type": "echo.message", "data": 1}')
                await ws.recv()
                rtts.append(1000 * (time.perf_counter() - start))
                await asyncio.sleep(ECHO_EVERY)

    async def run() -> list[float]:
        rtts: list[float] = []
        await asyncio.gather(*(one(rtts) for _ in range(ECHO_SOCKETS)))
        return rtts

    results.put(asyncio.run(run()))


def echo_figures(rtts: list[float]) -> dict[str, float]:
    ordered = sorted(rtts)
    return {
        "echoes": len(ordered),
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[int(0.99 * (len(ordered) - 1))],
        "max_ms": ordered[-1],
    }


async def avatar_bytes(base: str, token: str, photo: bytes) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=base, timeout=60, follow_redirects=True) as http:
        headers = {"Authorization": f"Bearer {token}"}
        user = (
            await http.put("/api/me/photo/", headers=headers, files={"photo": ("p.jpg", photo, "image/jpeg")})
        ).json()
        sizes = {
            key: len((await http.get(user[key])).content)  # relative, or absolute under a public media URL
            for key in ("photo", "photo_thumbnail")
        }
    return {
        "upload": len(photo),
        "before": stored_before_sizes(photo),
        "after_photo": sizes["photo"],
        "after_thumbnail": sizes["photo_thumbnail"],
    }


def machine_stalls(seconds: float, results: Any) -> None:
    """In a process of its own that does nothing else, the workers' own loop watch (``taxi.loopwatch``) for
    ``seconds``: (monotonic clock time, blocked seconds) of each sample blocked over STALL_S. Such a stall is not this
    process's code: the machine itself stopped it (the kernel, or a hypervisor pausing the virtual CPU)."""
    sys.path.insert(0, str(REPO))
    from taxi.loopwatch import LoopWatch

    async def run() -> list[tuple[float, float]]:
        stalls: list[tuple[float, float]] = []

        def observe(_lag: float, blocked: float) -> None:
            if blocked > STALL_S:
                stalls.append((time.monotonic(), blocked))

        watch = LoopWatch(observe)
        watch.start()
        await asyncio.sleep(seconds)
        watch.stop()
        return stalls

    results.put(asyncio.run(run()))


class BlockedScraper(threading.Thread):
    """Reads the workers' blocked-loop histogram every SCRAPE_EVERY s: the windows (start, end, monotonic clock) in
    which samples blocked over STALL_S were taken, and how many in each."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.windows: list[tuple[float, float, int]] = []
        self._done = threading.Event()

    def run(self) -> None:
        last, last_at = self._over(), time.monotonic()
        while not self._done.wait(SCRAPE_EVERY):
            now, now_at = self._over(), time.monotonic()
            if now > last:
                self.windows.append((last_at, now_at, now - last))
            last, last_at = now, now_at

    def _over(self) -> int:
        """Samples blocked over STALL_S since the workers started."""
        return int(lag_figures({}, loop_lag(self.server)["blocked"])["over_20_ms"])

    def stop(self) -> list[tuple[float, float, int]]:
        self._done.set()
        self.join()
        return self.windows


def coinciding(windows: list[tuple[float, float, int]], stalls: list[tuple[float, float]]) -> int:
    """How many of the workers' blocked samples were taken in a window that also saw the idle process stall (a
    stall ending at ``t`` after ``s`` seconds overlaps ``[t - s, t]``; a worker sample is taken after its stall)."""
    return sum(
        count
        for start, end, count in windows
        if any(at - stalled <= end and at >= start - SCRAPE_EVERY for at, stalled in stalls)
    )


LAG_BUCKET = re.compile(r'^taxi_event_loop_(lag|blocked)_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.M)


def loop_lag(server: ServerProcess) -> dict[str, dict[str, float]]:
    """The workers' event loop histograms so far, ``lag`` and ``blocked`` (the part of the lag not spent waiting
    for a core): cumulative samples per upper bound, seconds, from /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    found: dict[str, dict[str, float]] = {"lag": {}, "blocked": {}}
    for kind, bound, count in LAG_BUCKET.findall(text):
        found[kind][bound] = float(count)
    return found


def lag_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Samples taken between two scrapes: how many, how many lagged over 20 ms, and the bound of the worst."""
    counts = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
    total = counts.get("+Inf", 0.0)
    worst = next((bound for bound in sorted(counts, key=_bound) if counts[bound] >= total), "+Inf")
    return {"samples": int(total), "over_20_ms": int(total - counts.get(str(STALL_S), 0.0)), "worst_at_most_s": worst}


def _bound(text: str) -> float:
    return float("inf") if text == "+Inf" else float(text)


def measure(server: ServerProcess, seconds: float, concurrency: int, photo: bytes) -> dict[str, Any]:
    tokens = asyncio.run(accounts(server.url, concurrency + 1))
    probe_token = tokens.pop()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    # Idle first: the round trip of an unloaded server, for comparison.
    idle = context.Process(target=echo_probe, args=(server.ws_url, probe_token, 3.0, results))
    idle.start()
    idle_rtts = results.get(timeout=60)
    idle.join()
    probe = context.Process(target=echo_probe, args=(server.ws_url, probe_token, seconds, results))
    probe.start()
    control_results = context.Queue()
    control = context.Process(target=machine_stalls, args=(seconds, control_results))
    control.start()
    lag_before = loop_lag(server)
    scraper = BlockedScraper(server)
    scraper.start()
    changes = asyncio.run(change_photos(server.url, tokens, photo, seconds))
    windows = scraper.stop()
    lag_after = loop_lag(server)
    loaded_rtts = results.get(timeout=seconds + 60)
    probe.join()
    stalls = control_results.get(timeout=60)
    control.join()
    return {
        "photo_changes": changes,
        "echo_idle": echo_figures(idle_rtts),
        "echo_during_changes": echo_figures(loaded_rtts),
        "loop_lag_during_changes": lag_figures(lag_before["lag"], lag_after["lag"]),
        "loop_blocked_during_changes": lag_figures(lag_before["blocked"], lag_after["blocked"]),
        "idle_process_stalls_ms": [round(1000 * stalled, 1) for _at, stalled in stalls],
        "blocked_with_idle_process_stalled": coinciding(windows, stalls),
        "blocked_windows": windows,
        "trip_card_bytes": asyncio.run(avatar_bytes(server.url, tokens[0], photo)),
    }


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    changes, idle, loaded, card = (
        figures[k] for k in ("photo_changes", "echo_idle", "echo_during_changes", "trip_card_bytes")
    )
    print(
        f"\nphoto changes, {args.workers} workers, {args.concurrency} clients, {args.duration:g} s, {args.storage} store,"
    )
    print(f"upload {card['upload']:,} bytes (4000 x 3000 JPEG):")
    print(
        f"  {changes['per_second']:.1f} changes/s ({changes['changes']} done, failed {changes['failed'] or 'none'}),"
        f" latency p50 {changes['latency_p50_ms']:.0f} ms, max {changes['latency_max_ms']:.0f} ms"
    )
    for name, echo in (("idle", idle), ("during the changes", loaded)):
        print(
            f"  echo round trip {name}: p50 {echo['p50_ms']:.1f} ms, p99 {echo['p99_ms']:.1f} ms,"
            f" max {echo['max_ms']:.1f} ms ({echo['echoes']} echoes on {ECHO_SOCKETS} sockets)"
        )
    lag = figures["loop_lag_during_changes"]
    print(
        f"  the workers' event loops meanwhile (taxi_event_loop_lag_seconds, a sample every 10 ms): {lag['samples']}"
        f" samples, {lag['over_20_ms']} late by over 20 ms, the latest at most {lag['worst_at_most_s']} s"
    )
    blocked = figures["loop_blocked_during_changes"]
    print(
        f"    of that lag, not spent waiting for a core (taxi_event_loop_blocked_seconds): {blocked['over_20_ms']}"
        f" samples over 20 ms, the longest at most {blocked['worst_at_most_s']} s"
    )
    stalls = figures["idle_process_stalls_ms"]
    print(
        f"    an idle process's event loop on the same machine, the same measure: {len(stalls)} samples blocked over"
        f" 20 ms ({', '.join(f'{ms:.0f}' for ms in stalls) or 'none'} ms: the machine stopping it, not its code);"
        f" of the workers' {blocked['over_20_ms']}, {figures['blocked_with_idle_process_stalled']} within"
        f" {SCRAPE_EVERY:g} s of one of those"
    )
    print(
        f"trip card avatar: before sizes {card['before']:,} bytes (the whole photo), now {card['after_thumbnail']:,}"
        f" bytes (the thumbnail; the 1024 px photo is {card['after_photo']:,})"
    )


def cli(doc: str | None) -> None:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of photo changes")
    parser.add_argument("--concurrency", type=int, default=8, help="clients changing photos at once")
    parser.add_argument("--storage", choices=["local", "s3"], default="local")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    photo = phone_photo()
    with tempfile.TemporaryDirectory(prefix="bench-photos-") as tmp:
        folder = Path(tmp)
        env: dict[str, str] = {"TAXI_METRICS": "1"}  # the workers' own event loop lag, read from /metrics
        store = PrivateSeaweed(folder / "seaweed") if args.storage == "s3" else None
        if store is not None:
            store.start()
            env.update(store.env())
        try:
            with (
                ScratchDatabase("photos", folder, env) as scratch,
                ServerProcess(scratch.env, workers=args.workers) as server,
            ):
                figures = measure(server, args.duration, args.concurrency, photo)
        finally:
            if store is not None:
                store.__exit__(None, None, None)
    report(figures, args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
