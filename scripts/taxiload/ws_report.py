"""bench_ws's output: a line per run while it goes, the tables per scenario at the end, and the footer."""

from __future__ import annotations

from taxiload.ws_common import SCENARIOS, Row

FOOTER = """\
Reference (Django Channels, 2 workers): broadcast to 200 drivers 5,353 deliveries/s, p50 200 ms, p99 428 ms;
  lifecycle with 20 pairs 12.1 trips/s, update->rider p99 550 ms; 54 new authenticated sockets/s;
  42.7 KiB server memory per idle socket.
Targets (2 workers): broadcast to 1,000 drivers >= 60,000 deliveries/s, p99 < 25 ms, 100% delivered;
  >= 150 lifecycles/s with update->rider p99 < 50 ms; >= 1,000 new sockets/s; 10,000 idle sockets at <= 24 KiB
  server memory each; city (10,000 drivers, 2,500 fixes/s, 20 requests/s): request->nearby drivers and
  fix->rider p99 < 50 ms, every request delivered to exactly the drivers in range.
CPU columns are % of one core; this box has {cores} cores, shared by the client ({client}), the server, PostgreSQL
and Redis. client% is the benchmark's own processes (cl-max% the busiest one); irq% is the kernel's interrupt work
(mostly loopback TCP), charged to no process; other% is everything else on the box: if it is high, the run was
disturbed; repeat it.
bound: a client process >= 90% -> client; server >= 80% x workers -> server; idle < 10% -> box CPU (the client, the
server, PostgreSQL and Redis share the cores); else not CPU (I/O, the pool, Redis round trips)."""

# per scenario: (column header, width, key, format); keys are looked up in figures, then in cpu
COLUMNS: dict[str, list[tuple[str, int, str, str]]] = {
    "broadcast": [
        ("drivers", 7, "drivers", "{:.0f}"),
        ("trips/s", 7, "trips_per_s", "{:.1f}"),
        ("deliv/s", 8, "deliveries_per_s", "{:.0f}"),
        ("p50 ms", 7, "p50_ms", "{:.1f}"),
        ("p99 ms", 7, "p99_ms", "{:.1f}"),
        ("max ms", 7, "max_ms", "{:.1f}"),
        ("delivered", 9, "delivered_pct", "{:.2f}%"),
    ],
    "lifecycle": [
        ("pairs", 5, "pairs", "{:.0f}"),
        ("lc/s", 6, "lifecycles_per_s", "{:.1f}"),
        ("upd>rider p50", 13, "update_to_rider_p50_ms", "{:.1f}"),
        ("p99", 6, "update_to_rider_p99_ms", "{:.1f}"),
        ("max", 6, "update_to_rider_max_ms", "{:.1f}"),
        ("echo p99", 8, "create_echo_p99_ms", "{:.1f}"),
        ("errs", 4, "errors", "{:.0f}"),
        ("stalls", 6, "stalls", "{:.0f}"),
    ],
    "city": [
        ("req/s", 5, "requests_per_s", "{:.1f}"),
        ("fix/s", 5, "fixes_per_s", "{:.0f}"),
        ("reach", 5, "reached_per_request", "{:.0f}"),
        ("req p50", 7, "request_p50_ms", "{:.1f}"),
        ("req p99", 7, "request_p99_ms", "{:.1f}"),
        ("fix p50", 7, "fix_p50_ms", "{:.1f}"),
        ("fix p99", 7, "fix_p99_ms", "{:.1f}"),
        ("evt p99", 7, "event_p99_ms", "{:.1f}"),
        ("missed", 6, "missed", "{:.0f}"),
        ("extra", 5, "extra", "{:.0f}"),
    ],
    "connections": [
        ("sockets", 7, "sockets", "{:.0f}"),
        ("new/s", 6, "sockets_per_s", "{:.0f}"),
        ("open p50", 8, "open_p50_ms", "{:.1f}"),
        ("p99 ms", 7, "open_p99_ms", "{:.1f}"),
        ("RSS KiB/s", 9, "rss_kib_per_socket", "{:.1f}"),
        ("PSS KiB/s", 9, "pss_kib_per_socket", "{:.1f}"),
        ("reached", 7, "broadcast_reached_pct", "{:.1f}%"),
    ],
}
CPU_COLUMNS = [
    ("server%", 7, "server_cpu", "{:.0f}"),
    ("pg%", 4, "pg_cpu", "{:.0f}"),
    ("redis%", 6, "redis_cpu", "{:.0f}"),
    ("irq%", 4, "irq_cpu", "{:.0f}"),
    ("client%", 7, "client_cpu", "{:.0f}"),
    ("cl-max%", 7, "client_max_cpu", "{:.0f}"),
    ("other%", 6, "other_cpu", "{:.0f}"),
    ("idle%", 5, "idle_pct", "{:.0f}"),
]


def print_tables(rows: list[Row]) -> None:
    for scenario in (*SCENARIOS, "city-old-rule"):
        mine = [r for r in rows if r.scenario == scenario]
        if not mine:
            continue
        columns = COLUMNS[scenario.removesuffix("-old-rule")] + CPU_COLUMNS
        print(f"{scenario:<12} {'workers':>7} " + " ".join(f"{h:>{w}}" for h, w, _, _ in columns) + "  bound")
        for r in mine:
            values = r.figures | r.cpu
            cells = []
            for _, width, key, fmt in columns:
                v = values.get(key)
                cells.append(f"{'-' if v is None or v != v else fmt.format(v):>{width}}")
            mark = "" if r.valid else "  INVALID!"
            print(f"{'':<12} {r.workers:>7} " + " ".join(cells) + f"  {r.bound}{mark}")
        for r in mine:
            print(f"{'':<12} " + NOTES[scenario](r))
        print()


def _connections_note(r: Row) -> str:
    f = r.figures
    return (
        f"workers={r.workers}: server RSS {f['rss_before_kib'] / 1024:.0f} MiB before, "
        f"{f['rss_open_kib'] / 1024:.0f} MiB with {f['sockets']} sockets open, "
        f"{f['rss_closed_kib'] / 1024:.0f} MiB 3 s after closing them; open fds {f['fds_before']} -> "
        f"{f['fds_open']} -> {f['fds_closed']}; the broadcast reached its last socket after "
        f"{f['broadcast_last_ms']:.0f} ms; {f['listen_overflows']} listen-queue overflows and "
        f"{f['syn_retransmits']} SYN retransmits on the box while opening (CPU columns: while opening)"
    )


def _broadcast_note(r: Row) -> str:
    f = r.figures
    return (
        f"workers={r.workers}: {f['deliveries']} deliveries of {f['trips_per_s']:.1f} trips/s "
        f"(target {f['target_trips_per_s']}, {f['skipped']} skipped); create->echo p99 "
        f"{f['echo_p99_ms']:.1f} ms; target {f['target_trips_per_s'] * f['drivers']:.0f} deliveries/s"
    )


def _lifecycle_note(r: Row) -> str:
    f = r.figures
    return (
        f"workers={r.workers} pairs={r.size}: {f['completed']} lifecycles; driver update->reply "
        f"p99 {f['update_reply_p99_ms']:.1f} ms; drivers received {f['driver_frames_per_s']:.0f} frames/s"
    )


def _city_note(r: Row) -> str:
    f = r.figures
    checked = f" of {f['checked']} expected deliveries checked" if "checked" in f else ""
    return (
        f"workers={r.workers}: {r.size} drivers, {f['requests']} requests, {f['reached_per_request']:.0f} drivers "
        f"reached per request{checked}; create->echo p99 {f['echo_p99_ms']:.1f} ms"
    )


NOTES = {
    "broadcast": _broadcast_note,
    "lifecycle": _lifecycle_note,
    "connections": _connections_note,
    "city": _city_note,
    "city-old-rule": _city_note,
}


def show(row: Row) -> None:
    """The line printed right after a run."""
    f, c = row.figures, row.cpu
    key = {
        "broadcast": ("deliveries_per_s", "deliveries/s"),
        "lifecycle": ("lifecycles_per_s", "lifecycles/s"),
        "connections": ("sockets_per_s", "new sockets/s"),
        "city": ("request_p99_ms", "ms request->driver p99"),
        "city-old-rule": ("request_p99_ms", "ms request->driver p99"),
    }[row.scenario]
    flag = "" if row.valid else "   <-- " + "; ".join(row.problems)
    print(
        f"    workers={row.workers} {row.scenario}: {f[key[0]]:.1f} {key[1]}; server {c['server_cpu']:.0f}%, "
        f"pg {c['pg_cpu']:.0f}%, client {c['client_cpu']:.0f}%, idle {c['idle_pct']:.0f}%{flag}"
    )
