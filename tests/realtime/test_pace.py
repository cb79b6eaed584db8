"""The per-socket message limit without a server: the bucket's rate and burst, and the flood rule, on a clock the
test moves by hand."""

from __future__ import annotations

from taxi.realtime.pace import MessageLimit, Pace, Verdict

ADMIT, REFUSE, CLOSE, DROP = Verdict.ADMIT, Verdict.REFUSE, Verdict.CLOSE, Verdict.DROP


def run(limit: MessageLimit, pace: Pace, times: list[float], counted: bool = True) -> list[Verdict]:
    return [limit.check(pace, t, counted) for t in times]


def steady(start: float, seconds: int, per_second: int) -> list[float]:
    """``per_second`` evenly spaced arrivals in each of ``seconds`` seconds from ``start``."""
    return [start + s + i / per_second for s in range(seconds) for i in range(per_second)]


def test_a_burst_of_twice_the_rate_passes_then_the_rate_refills():
    limit = MessageLimit(20)
    pace = Pace(100.0)
    assert run(limit, pace, [100.0] * 41) == [ADMIT] * 40 + [REFUSE]
    assert limit.retry_after(pace, 100.0) > 0
    # A refused message takes no token: a twentieth of a second later, exactly one more passes.
    assert run(limit, pace, [100.05, 100.05]) == [ADMIT, REFUSE]
    # A second later the bucket has refilled twenty tokens, not forty.
    assert run(limit, pace, [101.05] * 21) == [ADMIT] * 20 + [REFUSE]
    # Idle long enough, it is full again (and never fuller).
    assert run(limit, pace, [200.0] * 41) == [ADMIT] * 40 + [REFUSE]
    assert limit.retry_after(Pace(0.0), 0.0) == 0


def test_messages_at_the_rate_are_never_refused():
    limit = MessageLimit(5)
    assert set(run(limit, Pace(0.0), steady(0.0, 60, 5))) == {ADMIT}


def test_uncounted_messages_take_no_token():
    limit = MessageLimit(2)
    pace = Pace(0.0)
    assert set(run(limit, pace, [0.0] * 15, counted=False)) == {ADMIT}
    assert run(limit, pace, [0.0] * 5) == [ADMIT] * 4 + [REFUSE]


def test_ten_seconds_over_ten_times_the_rate_close_the_socket_at_the_next_frame():
    limit = MessageLimit(2)  # a flood second holds more than 20 frames
    pace = Pace(0.0)
    verdicts = run(limit, pace, steady(0.0, 10, 21))
    assert CLOSE not in verdicts and REFUSE in verdicts
    assert limit.check(pace, 10.0) is CLOSE
    assert run(limit, pace, [10.01, 30.0]) == [DROP, DROP]


def test_uncounted_frames_count_toward_a_flood():
    limit = MessageLimit(2)
    pace = Pace(0.0)
    assert set(run(limit, pace, steady(0.0, 10, 21), counted=False)) == {ADMIT}
    assert limit.check(pace, 10.0, counted=False) is CLOSE


def test_a_flood_needs_ten_whole_seconds_in_a_row():
    limit = MessageLimit(2)
    # At ten times the rate exactly, never.
    pace = Pace(0.0)
    assert CLOSE not in run(limit, pace, steady(0.0, 30, 20))
    # Nine flood seconds, a quiet one (the rate), nine more: no close.
    pace = Pace(0.0)
    times = steady(0.0, 9, 25) + steady(9.0, 1, 2) + steady(10.0, 9, 25) + [19.0]
    assert CLOSE not in run(limit, pace, times)
    # Nine flood seconds, a second with no frame at all, then more: the streak starts again.
    pace = Pace(0.0)
    times = steady(0.0, 9, 25) + steady(10.0, 9, 25) + [19.0]
    assert CLOSE not in run(limit, pace, times)
    # A huge burst within one second is one flood second, not ten.
    pace = Pace(0.0)
    assert CLOSE not in run(limit, pace, [0.5] * 5000 + [1.5, 12.0])
    # Bursts in the middle of a window still count toward that window.
    pace = Pace(0.0)
    times = [s + 0.9 for s in range(10) for _ in range(21)] + [10.95]
    assert run(limit, pace, times)[-1] is CLOSE
