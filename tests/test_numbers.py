"""Phone numbers as senders: the numbers CLI, and the per-number slot that holds across workers."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from sequencer.models import PhoneNumber
from sequencer.numbers import ensure, reserve_slot, reserve_slots
from sequencer.testing.world import team

NUMBER = "+14155550123"
NOW = datetime(2026, 3, 2, 14, 0, tzinfo=timezone.utc)


def test_assign_list_unassign(cli) -> None:
    team(cli)
    cli("users", "add", "other@acme.example", "--role", "rep")
    assert "assigned to rep@acme.example" in cli("numbers", "assign", "+1 415 555 0123", "--owner", "REP@acme.example").output
    [row] = json.loads(cli("numbers", "list", "--format", "json").output)
    assert (row["number"], row["owner"]) == (NUMBER, "rep@acme.example") and row["created_at"].endswith("Z")
    taken = cli("numbers", "assign", NUMBER, "--owner", "other@acme.example", expect=1)
    assert f"{NUMBER} belongs to rep@acme.example; `sequencer numbers unassign {NUMBER}` first" in taken.output
    assert "back in the team pool" in cli("numbers", "unassign", NUMBER).output
    assert json.loads(cli("numbers", "list", "--format", "json").output)[0]["owner"] is None
    cli("numbers", "assign", NUMBER, "--owner", "other@acme.example")


def test_errors_name_the_fix(cli) -> None:
    team(cli)
    assert "must be written internationally, like +14155550100" in cli(
        "numbers", "assign", "4155550123", "--owner", "rep@acme.example", expect=1).output
    assert "no user nobody@acme.example; add them with `sequencer users add`" in cli(
        "numbers", "assign", NUMBER, "--owner", "nobody@acme.example", expect=1).output
    assert "is not assigned to anyone" in cli("numbers", "unassign", NUMBER, expect=1).output


def test_slots_are_spaced_and_capped(runtime) -> None:
    with runtime.session() as session:
        ensure(session, [NUMBER], NOW)
    with runtime.session() as session:
        first = reserve_slot(session, NUMBER, 2, NOW)
        second = reserve_slot(session, NUMBER, 2, NOW)
        # The next free slot is 1 s away: later than `latest`, so nothing is taken.
        refused = reserve_slot(session, NUMBER, 2, NOW, latest=NOW + timedelta(milliseconds=900))
        third = reserve_slot(session, NUMBER, 2, NOW, latest=NOW + timedelta(seconds=1))
    assert (first.at, second.at, third.at) == (NOW, NOW + timedelta(milliseconds=500), NOW + timedelta(seconds=1))
    assert first.reserved and second.reserved and third.reserved
    assert not refused.reserved and refused.at == NOW + timedelta(seconds=1)
    with runtime.session() as session:
        assert reserve_slot(session, NUMBER, 1000, NOW, daily_cap=4).reserved
        capped = reserve_slot(session, NUMBER, 1000, NOW, daily_cap=4)
        assert not capped.reserved and capped.at == datetime(2026, 3, 3, tzinfo=timezone.utc)
        # A new UTC day starts a new count.
        assert reserve_slot(session, NUMBER, 1000, NOW + timedelta(days=1), daily_cap=4).reserved


def test_two_workers_never_share_a_slot(runtime) -> None:
    """Four threads, each its own connection and transaction, as workers on other hosts would be."""
    with runtime.session() as session:
        ensure(session, [NUMBER], NOW)
    slots: list[datetime] = []
    lock, start = threading.Lock(), threading.Barrier(4)

    def worker() -> None:
        start.wait()
        for _ in range(50):
            with runtime.session() as session:
                slot = reserve_slot(session, NUMBER, 10, NOW)
            with lock:
                slots.append(slot.at)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(slots) == [NOW + timedelta(milliseconds=100 * i) for i in range(200)]
    with runtime.session() as session:
        row = session.scalar(sa.select(PhoneNumber).where(PhoneNumber.number == NUMBER))
        assert row.cap_count == 200


def test_a_group_takes_its_slots_in_one_go(runtime) -> None:
    other = "+14155550124"
    with runtime.session() as session:
        ensure(session, [NUMBER, other], NOW)
    with runtime.session() as session:
        slots = reserve_slots(session, [NUMBER, other, NUMBER, NUMBER, other], 2, NOW,
                              latest=NOW + timedelta(milliseconds=600))
    assert [(s.at - NOW, s.reserved) for s in slots] == [
        (timedelta(0), True), (timedelta(0), True), (timedelta(milliseconds=500), True),
        # The third slot of NUMBER would start 1 s from now, after `latest`: nothing taken, try then.
        (timedelta(seconds=1), False), (timedelta(milliseconds=500), True)]
    with runtime.session() as session:
        # What the group took is taken for everyone: the next slots follow on.
        assert reserve_slot(session, NUMBER, 2, NOW).at == NOW + timedelta(seconds=1)
        assert reserve_slot(session, other, 2, NOW).at == NOW + timedelta(seconds=1)
        capped = reserve_slots(session, [NUMBER] * 3, 1000, NOW, daily_cap=4)
    assert [s.reserved for s in capped] == [True, False, False]
    assert capped[1].at == datetime(2026, 3, 3, tzinfo=timezone.utc)


def test_groups_and_single_slots_from_many_workers_never_overlap(runtime) -> None:
    """Four workers, two taking groups of five slots and two one at a time, each in its own transactions."""
    with runtime.session() as session:
        ensure(session, [NUMBER], NOW)
    slots: list[datetime] = []
    lock, start = threading.Lock(), threading.Barrier(4)

    def worker(group: int) -> None:
        start.wait()
        for _ in range(50 // group):
            with runtime.session() as session:
                taken = reserve_slots(session, [NUMBER] * group, 10, NOW)
            with lock:
                slots.extend(slot.at for slot in taken)

    threads = [threading.Thread(target=worker, args=(group,)) for group in (5, 5, 1, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(slots) == [NOW + timedelta(milliseconds=100 * i) for i in range(200)]
