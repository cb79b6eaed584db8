"""What the soak prints after the load (replies, the database check, deliveries, faults, the server's log), its
verdict line, and the JSON of --json."""

from __future__ import annotations

import argparse
import collections
from typing import Any

from taxiload.soak_run import Soak


def report(args: argparse.Namespace, r: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    """Print the details; return (exit status, verdict line, the JSON data)."""
    soak: Soak = r["soak"]
    db, dl = r["db"], r["deliveries"]
    opens = print_counts(soak)
    print(
        f"database: {db['stored_trips']} trips stored, {db['trips_checked']} acknowledged ones checked, "
        f"{len(db['lost'])} lost, {len(db['wrong'])} wrong, {db['later_after_ambiguous_step']} one step later "
        f"after an unsettled ambiguous step, {db['stored_never_acknowledged']} stored but never acknowledged"
    )
    print(f"all-services-up windows (s, as in the progress lines): {dl['windows']}")
    print(f"broadcasts due in them: {dl['by_kind']}; not counted: {dl['skipped']}")
    fault_words, recovery = print_faults(soak, r["workers_end"])
    print_server(r)
    failures = db["lost"] + db["wrong"] + dl["missed"] + soak.problems + print_phones(r["phones"])
    if r["stop_code"] != 0:
        failures.append(r["stop"])
    for line in failures[:30]:
        print(f"  ! {line}")
    if len(failures) > 30:
        print(f"  ! ... and {len(failures) - 30} more")
    creates = sum(1 for a in soak.acks if a.status == "REQUESTED")
    summary = (
        f"{args.minutes:g} min, {args.workers} workers, faults: {', '.join(fault_words) if fault_words else 'none'}; "
        f"{creates} trips, {len(soak.acks)} acknowledged states, {len(db['lost'])} lost"
        + (f", {len(db['wrong'])} in a wrong state" if db["wrong"] else "")
        + f"; {dl['delivered']} of {dl['due']} broadcasts delivered while all services were up"
        + (f"; recovery: {', '.join(recovery)}" if recovery else "")
    )
    if failures:
        extra = len(failures) - len(db["lost"]) - len(db["wrong"]) - len(dl["missed"])
        verdict = f"SOAK FAIL: {summary}" + (f"; {extra} other problems (above)" if extra else "")
    else:
        verdict = f"SOAK PASS: {summary}"
    return (1 if failures else 0), verdict, json_data(args, r, verdict, opens)


def print_phones(phones: dict[str, Any] | None) -> list[str]:
    """The --disconnects line; its failures (every lost event, stale view and version regression is one)."""
    if phones is None:
        return []
    counts = {k: len(phones[k]) for k in ("lost_events", "stale_views", "version_regressions")}
    print(
        f"disconnects: {phones['phones']} phones, {phones['drops']} drops, {phones['resumes']} resumes; "
        + ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in counts.items())
    )
    return [f"{k.replace('_', ' ')}: {m}" for k in counts for m in phones[k]] + phones["problems"]


def print_counts(soak: Soak) -> collections.Counter[str]:
    """The replies and retries by kind, and the failed (re)connect attempts, which it returns."""
    print()
    print("requests and replies:")
    for what, n in sorted(soak.counts.items()):
        print(f"  {n:7d}  {what}")
    opens: collections.Counter[str] = collections.Counter()
    for client in soak.all_clients():
        opens.update(client.open_failures)
    if opens:
        print("  failed (re)connect attempts: " + ", ".join(f"{n} x {k}" for k, n in opens.most_common()))
    return opens


def print_faults(soak: Soak, workers_end: list[int]) -> tuple[list[str], list[str]]:
    """A line per fault; returns the faults and the recovery times in words, for the verdict."""
    fault_words, recovery = [], []
    for f in soak.faults:
        rec = "never" if f.recovery is None else f"{f.recovery:.2f} s"
        if f.kind == "worker":
            fault_words.append(f"worker kill ({f.restart or 'restart unknown'})")
            recovery.append(f"worker {rec}")
            print(
                f"worker kill: {f.dropped} client sockets dropped, the first back {rec} after the kill; {f.restart} "
                f"({f.note}); workers at the end {workers_end}"
            )
            continue
        fault_words.append(f"{f.kind} restart {f.outage:.1f} s")
        recovery.append(f"{f.kind} {rec}")
        print(f"{f.kind}: down {f.outage:.1f} s; first successful operation {rec} after it was back", end="")
        if f.kind == "redis" and f.back is not None:
            drivers = [c for c in soak.all_clients() if c.driver]
            late = [f.first_heard[c.label] for c in drivers if c.label in f.first_heard]
            if len(late) == len(drivers):
                print(f"; every driver socket heard broadcasts again {max(late) - f.back:.2f} s after", end="")
            else:
                print(f"; {len(drivers) - len(late)} driver sockets heard nothing within 30 s after", end="")
        print()
    return fault_words, recovery


def print_server(r: dict[str, Any]) -> None:
    """Redis channels left at the end, the server's stop, and the summary of its log."""
    if r["redis_channels"] is not None:
        print(f"Redis channels under the prefix at the end of the load: {r['redis_channels']}")
    print(r["stop"])
    if r["log_problems"]:
        print(f"server log errors: {r['log_problems']}")
    if r["log_tracebacks"]:
        print(f"server log: {r['log_tracebacks']} tracebacks")
    if r["log_noise"]:
        print(f"server log, other noise: {r['log_noise']}")
    if r["log_warnings"]:
        print(f"server log warnings: {r['log_warnings']}")


def json_data(
    args: argparse.Namespace, r: dict[str, Any], verdict: str, opens: collections.Counter[str]
) -> dict[str, Any]:
    soak: Soak = r["soak"]
    return {
        "args": vars(args) | {"json": str(args.json) if args.json else None},
        "verdict": verdict,
        "trips": sum(1 for a in soak.acks if a.status == "REQUESTED"),
        "acknowledged_states": len(soak.acks),
        "database": r["db"],
        "deliveries": r["deliveries"],
        "faults": [
            {
                "kind": f.kind,
                "outage_s": round(f.outage, 2),
                "recovery_s": None if f.recovery is None else round(f.recovery, 2),
                "dropped_sockets": f.dropped,
                "restart": f.restart,
                "note": f.note,
            }
            for f in soak.faults
        ],
        "counts": dict(soak.counts),
        "failed_connects": dict(opens),
        "problems": soak.problems,
        "redis_channels_at_end": r["redis_channels"],
        "disconnects": r["phones"],
        "server": {
            "stop": r["stop"],
            "log_errors": r["log_problems"],
            "log_noise": r["log_noise"],
            "log_warnings": r["log_warnings"],
        },
    }
