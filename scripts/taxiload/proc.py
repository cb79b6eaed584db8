"""CPU time, process trees, memory and TCP counters from /proc, and this process's own resources."""

from __future__ import annotations

import collections
import os
import re
import resource
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
CORES = os.cpu_count() or 1


def proc_stat(pid: int) -> tuple[int, float, str] | None:
    """(process group, CPU seconds used so far, command name) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm, fields = raw[raw.index("(") + 1 : raw.rindex(")")], raw[raw.rindex(")") + 2 :].split()
    return int(fields[2]), (int(fields[11]) + int(fields[12])) / TICK, comm


def processes() -> dict[int, tuple[int, float, str]]:
    return {int(e.name): st for e in os.scandir("/proc") if e.name.isdigit() and (st := proc_stat(int(e.name)))}


def read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def cpu_snapshot(pgid: int, db_name: str | None = None) -> dict[str, float]:
    """CPU seconds so far: the server's process group, PostgreSQL, Redis, and the whole box (busy and total).

    With ``db_name``, PostgreSQL is its shared background processes plus the backends of that database only, so a
    test suite using the same PostgreSQL lands in "other" (and its backends coming and going cannot skew pg).
    """
    procs = processes()
    busy, softirq, total = box_cpu()
    pg = [pid for pid, (_, _, comm) in procs.items() if comm.startswith("postgres")]
    if db_name is not None:
        pg = [pid for pid in pg if _pg_counts(read_bytes(f"/proc/{pid}/cmdline"), db_name)]
    return {
        "server": sum(cpu for group, cpu, _ in procs.values() if group == pgid),
        "pg": sum(procs[pid][1] for pid in pg),
        "redis": sum(cpu for _, cpu, comm in procs.values() if comm.startswith("redis-server")),
        "busy": busy,
        "softirq": softirq,
        "total": total,
    }


def box_cpu() -> tuple[float, float, float]:
    """CPU seconds of the whole box so far: (busy, interrupts, total). Interrupts (``irq`` + ``softirq``) are mostly
    the kernel's loopback TCP, charged to no process."""
    fields = [int(x) / TICK for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return sum(fields) - fields[3] - fields[4], fields[5] + fields[6], sum(fields)


def _pg_counts(cmdline: bytes, db_name: str) -> bool:
    """A PostgreSQL process that is not a client backend (postmaster, checkpointer, ...) or one of ``db_name``'s."""
    client_backend = b"(" in cmdline or b"[local]" in cmdline  # "postgres: 15/main: user db 127.0.0.1(5432) idle"
    return not client_backend or f" {db_name} ".encode() in cmdline


def cpu_percent(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """server%, pg%, redis%, irq% (of one core) and the box's idle% between two cpu_snapshot()s ``wall`` s apart."""
    used = {k: 100 * (after[k] - before[k]) / max(wall, 1e-9) for k in ("server", "pg", "redis", "softirq", "busy")}
    idle = 100 * (1 - (after["busy"] - before["busy"]) / max(after["total"] - before["total"], 1e-9))
    return {
        "server_cpu": used["server"],
        "pg_cpu": used["pg"],
        "redis_cpu": used["redis"],
        "irq_cpu": used["softirq"],
        "busy_cpu": used["busy"],
        "idle_pct": idle,
    }


def quiet_box(seconds: float = 1.0) -> float:
    """% of one core used by the box over ``seconds`` (another benchmark or a test suite running?)."""
    before = cpu_snapshot(-1)
    time.sleep(seconds)
    after = cpu_snapshot(-1)
    return 100 * (after["busy"] - before["busy"]) / seconds


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (by parent PID), as found in /proc now."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                raw = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            children[int(raw[raw.rindex(")") + 2 :].split()[1])].append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def memory_kib(pids: list[int]) -> dict[str, int | None]:
    """Summed RSS and PSS (KiB) of ``pids`` from /proc/<pid>/smaps_rollup (RSS from statm if that is unreadable;
    PSS is then None), and their open file descriptors."""
    rss, pss, fds = 0, 0, 0
    pss_ok = True
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            rss += int(re.search(r"^Rss:\s+(\d+) kB", rollup, re.M).group(1))  # type: ignore[union-attr]
            pss += int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1))  # type: ignore[union-attr]
        except (OSError, AttributeError):
            pss_ok = False
            try:
                rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
            except OSError:
                continue
        try:
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return {"rss": rss, "pss": pss if pss_ok else None, "fds": fds}


def tcp_counters(*names: str) -> dict[str, int]:
    """Box-wide TcpExt counters from /proc/net/netstat (e.g. ListenOverflows: connections the accept queue dropped)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            table = dict(zip(head.split()[1:], map(int, values.split()[1:]), strict=False))
            return {name: table.get(name, 0) for name in names}
    return dict.fromkeys(names, 0)


def cpu_seconds() -> float:
    """CPU time (user + system) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_nofile() -> None:
    """Soft limit of open files up to the hard limit: 10,000 sockets need it (in the client and the server)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
