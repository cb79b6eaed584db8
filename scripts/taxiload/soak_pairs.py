"""One soak pair's loop: the rider creates a trip, its driver hears it (or finds it over HTTP) and takes it through
STARTED, IN_PROGRESS and COMPLETED; `unavailable` errors are retried, ambiguous steps settled by a re-fetch."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from taxiload.soak_client import Client
from taxiload.soak_ledger import Ledger
from taxiload.soak_model import HEAR_WAIT, NEXT, ORDER, RETRY_DELAY, SETTLE, Pair, Trip, mono


class PairLoop:
    """Runs ``pair`` until the ledger's ``stop_at``, pausing ``think`` s (jittered 0.5-1.5x) before each step."""

    def __init__(self, ledger: Ledger, pair: Pair, think: float) -> None:
        self.ledger, self.pair, self.think = ledger, pair, think

    async def pause(self) -> None:
        await asyncio.sleep(self.think * random.uniform(0.5, 1.5))

    async def run(self) -> None:
        await asyncio.sleep(random.uniform(0, self.think))
        while mono() < self.ledger.stop_at:
            await self.resync()
            trip = self.pair.orphans.popleft() if self.pair.orphans else await self.create()
            if trip is None:
                break
            await self.drive(trip)
            await self.pause()

    async def resync(self) -> None:
        """After a reconnect (or an ambiguous create): re-fetch the pair's trips, as a client should."""
        pair, ledger = self.pair, self.ledger
        for client in (pair.rider, pair.driver):
            if not client.needs_resync:
                continue
            client.needs_resync = False
            ledger.count("HTTP re-fetches")
            before = {t.id: t.known for t in ledger.trips.values() if t.pair == pair.idx}
            status, body = await ledger.get_retrying(client, "/api/trip/?limit=500")
            if status != 200:
                client.needs_resync = True  # try again at the next step
                continue
            for item in body:
                if (item.get("rider") or {}).get("id") == pair.rider.account.id:  # drivers see every request
                    self.refetched(client, item, before)

    def refetched(self, client: Client, item: dict[str, Any], before: dict[str, str | None]) -> None:
        pair, ledger = self.pair, self.ledger
        trip = ledger.trips.get(item["id"])
        if trip is not None:
            ledger.observe(trip, item["status"], before.get(trip.id))
        elif item["status"] == "REQUESTED" and client is pair.rider:
            # Committed, but its create.trip was never acknowledged (the reply was lost with its socket, or
            # the connection broke after the INSERT): the pair takes it through like any other.
            trip = Trip(item["id"], pair.idx, known="REQUESTED", orphan=True, member_since=mono())
            ledger.trips[trip.id] = trip
            pair.orphans.append(trip)
            ledger.count("orphan trips adopted (committed, never acknowledged)")
        elif item["status"] != "REQUESTED":
            ledger.problem(f"{client.label}: re-fetch shows trip {item['id']} ({item['status']}) nobody drove")

    async def create(self) -> Trip | None:
        pair, ledger, rider = self.pair, self.ledger, self.pair.rider
        pair.seq += 1
        form = {"pick_up_address": f"soak {pair.idx}-{pair.seq}", "drop_off_address": "Elsewhere 1"}

        def match(data: dict[str, Any]) -> bool:
            return data.get("status") == "REQUESTED" and (data.get("rider") or {}).get("id") == rider.account.id

        ambiguous = False
        while mono() < ledger.stop_at:
            if not await rider.wait_up(ledger.stop_at):
                break
            sent = mono()
            kind, reply = await rider.request("create.trip", form, match)
            if kind == "down":  # not sent: wait for the reconnect
                await asyncio.sleep(0.05)
                continue
            if kind == "ack":
                trip = Trip(reply["id"], pair.idx, create_gen=rider.lives[-1].gen if rider.lives else None)
                trip.member_since = mono()
                ledger.trips[trip.id] = trip
                ledger.ack(trip, "REQUESTED", sent, pair, None)
                ledger.count("create.trip acknowledged after a retry" if ambiguous else "create.trip acknowledged")
                if ambiguous:
                    rider.needs_resync = True  # an earlier attempt may have committed: find it by a re-fetch
                return trip
            if kind == "error":
                ledger.count(f"create.trip error {reply.get('code')}")
                if reply.get("code") != "unavailable":
                    ledger.problem(f"{rider.label}: create.trip refused: {reply}")
                    await asyncio.sleep(1)
                    continue
            else:
                ledger.count(f"create.trip {kind}")
            ambiguous = True  # `unavailable` (the INSERT may have committed as the connection broke), lost, timeout
            await asyncio.sleep(RETRY_DELAY * random.uniform(0.5, 1.5))
        return None

    async def hear(self, trip: Trip) -> bool:
        """The pair's driver learns of its rider's new trip: from the create.trip broadcast, else over HTTP."""
        ledger, driver = self.ledger, self.pair.driver
        if trip.id not in driver.heard_requested:
            fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            driver.want[trip.id] = fut
            try:
                await asyncio.wait_for(fut, HEAR_WAIT)
            except TimeoutError:
                pass
            finally:
                driver.want.pop(trip.id, None)
        if trip.id in driver.heard_requested:
            ledger.count("driver heard its rider's trip")
            return True
        before = trip.known
        status, body = await ledger.get_retrying(driver, f"/api/trip/{trip.id}/")
        if status != 200:
            if status == 404:
                ledger.problem(f"{driver.label}: trip {trip.id}, acknowledged as REQUESTED, is not visible to it")
            return False
        ledger.observe(trip, body["status"], before)
        if body["status"] != "REQUESTED" or (body.get("rider") or {}).get("id") != self.pair.rider.account.id:
            ledger.problem(f"{driver.label}: trip {trip.id} is {body['status']} before it accepted it")
            return False
        ledger.count("driver learned its rider's trip over HTTP")
        return True

    async def drive(self, trip: Trip) -> None:
        if trip.known == "REQUESTED" and not await self.hear(trip):
            return
        while trip.known in NEXT and mono() < self.ledger.stop_at:
            await self.pause()
            await self.resync()
            if trip.known in NEXT and not await self.advance(trip, NEXT[trip.known]):
                return

    async def advance(self, trip: Trip, target: str) -> bool:
        """One update.trip until acknowledged, or settled by a re-fetch; False to give up on this trip."""
        ledger, driver = self.ledger, self.pair.driver
        data = {"id": trip.id, "status": target, "rider": self.pair.rider.account.id, "driver": driver.account.id}

        def match(reply: dict[str, Any]) -> bool:
            return reply.get("id") == trip.id and reply.get("status") == target

        ambiguous = False
        while mono() < ledger.stop_at:
            if not await driver.wait_up(ledger.stop_at):
                return False
            sent = mono()
            kind, reply = await driver.request("update.trip", data, match)
            if kind == "down":  # not sent: wait for the reconnect
                await asyncio.sleep(0.05)
                continue
            if kind == "ack":
                ledger.ack(trip, target, sent, self.pair, driver.account.id)
                ledger.count("update.trip acknowledged after a retry" if ambiguous else "update.trip acknowledged")
                return True
            if kind == "error":
                if reply.get("code") != "unavailable":
                    return await self.refused(trip, target, reply, ambiguous)
                # The UPDATE may have committed and only the read after it failed: ambiguous. Re-send.
                ledger.count("update.trip error unavailable" + (" after an ambiguous attempt" if ambiguous else ""))
                ambiguous = True
                trip.pending.add(target)
                await asyncio.sleep(RETRY_DELAY * random.uniform(0.5, 1.5))
                continue
            # lost with its socket, or timed out: ambiguous. Reconnect, re-fetch; re-send if it had not committed.
            ledger.count(f"update.trip {kind}")
            ambiguous = True
            trip.pending.add(target)
            if not await driver.wait_up(ledger.stop_at + SETTLE):
                return False
            if await self.settle(trip, target):
                return True
        return False

    async def refused(self, trip: Trip, target: str, reply: dict[str, Any], ambiguous: bool) -> bool:
        """An update.trip refused with an error other than `unavailable`; True if ``target`` is committed anyway."""
        code, label = reply.get("code"), self.pair.driver.label
        self.ledger.count(f"update.trip error {code}" + (" after an ambiguous attempt" if ambiguous else ""))
        if code in ("invalid_transition", "trip_unavailable") and ambiguous:
            # Expected when an earlier attempt did commit: the re-fetch tells.
            if await self.settle(trip, target):
                return True
            self.ledger.problem(f"{label}: update.trip {target} of {trip.id} refused ({code}) but not committed")
            return False
        self.ledger.problem(f"{label}: update.trip {target} of {trip.id} refused: {reply}")
        await self.settle(trip, target)
        return False

    async def settle(self, trip: Trip, target: str) -> bool:
        """Re-fetch the trip after an ambiguous step; True if ``target`` (or later) is committed."""
        ledger, driver = self.ledger, self.pair.driver
        before = trip.known
        status, body = await ledger.get_retrying(driver, f"/api/trip/{trip.id}/")
        if status != 200:
            ledger.problem(f"{driver.label}: could not re-fetch trip {trip.id}: {status} {body}")
            return False
        ledger.observe(trip, body["status"], before)
        if ORDER[body["status"]] >= ORDER[target]:
            ledger.count("ambiguous step settled by a re-fetch: it had committed")
            return True
        ledger.count("ambiguous step settled by a re-fetch: it had not committed")
        return False
