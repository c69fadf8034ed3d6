"""The phone numbers we text and call from: a rep's own or the team pool's, and their sending slots.

SMS and voice share these numbers, so they are core. The per-number rate and daily cap must
hold across any number of workers: `reserve_slots` reads the numbers' rows locked and writes
their next slots back in the same transaction, which PostgreSQL serializes on the row locks and
SQLite on its single writer.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer.leads import LeadDataError, parse_phone
from sequencer.models import PhoneNumber, User

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US_PER_DAY = 86_400_000_000


class NumberError(ValueError):
    """A number cannot be assigned or released; the message names the number and the fix."""


@dataclass(frozen=True)
class Slot:
    """When a number may send next; `reserved` False means nothing was taken: try again at `at`."""

    at: datetime
    reserved: bool


def e164(text: str) -> str:
    """Return a number written internationally (+...) in E.164, or raise NumberError naming it."""
    value = (text or "").strip()
    if not value.startswith("+"):
        raise NumberError(f"number '{value}' must be written internationally, like +14155550100")
    try:
        return parse_phone(value, None)
    except LeadDataError as exc:
        raise NumberError(str(exc).replace("phone", "number", 1)) from None


def assign(session: so.Session, number: str, owner_email: str, now: datetime) -> PhoneNumber:
    """Give a number to a user (adding it if it is new); a number another user owns must be released first."""
    value = e164(number)
    owner = session.scalar(sa.select(User).where(User.email == owner_email.strip().lower()))
    if owner is None:
        raise NumberError(f"no user {owner_email.strip()}; add them with `sequencer users add`")
    row = session.scalar(sa.select(PhoneNumber).where(PhoneNumber.number == value).with_for_update())
    if row is None:
        row = PhoneNumber(number=value, owner_id=owner.id, created_at=now)
        session.add(row)
    elif row.owner_id not in (None, owner.id):
        holder = session.get(User, row.owner_id)
        raise NumberError(f"{value} belongs to {holder.email if holder else f'user {row.owner_id}'}; "
                          f"`sequencer numbers unassign {value}` first")
    row.owner_id = owner.id
    session.flush()
    return row


def unassign(session: so.Session, number: str) -> PhoneNumber:
    """Return a user's number to the team pool; leads that hear from it keep hearing from it."""
    value = e164(number)
    row = session.scalar(sa.select(PhoneNumber).where(PhoneNumber.number == value))
    if row is None or row.owner_id is None:
        raise NumberError(f"{value} is not assigned to anyone; `sequencer numbers list` shows the assigned numbers")
    row.owner_id = None
    session.flush()
    return row


def list_numbers(session: so.Session) -> list[tuple[PhoneNumber, str | None]]:
    """Return every number with its owner's email (None for the pool), by number."""
    query = (sa.select(PhoneNumber, User.email).outerjoin(User, User.id == PhoneNumber.owner_id)
             .order_by(PhoneNumber.number))
    return [(row, email) for row, email in session.execute(query)]


def ensure(session: so.Session, numbers: list[str], now: datetime) -> None:
    """Add the configured pool numbers that have no row yet, so each gets its own sending slots."""
    if not numbers:
        return
    known = set(session.scalars(sa.select(PhoneNumber.number).where(PhoneNumber.number.in_(numbers))))
    for number in dict.fromkeys(numbers):
        if number not in known:
            # A nested transaction: another worker adding the same number at once is not an error.
            try:
                with session.begin_nested():
                    session.add(PhoneNumber(number=number, created_at=now))
            except sa.exc.IntegrityError:
                pass


def reserve_slot(session: so.Session, number: str, per_second: float, now: datetime, *,
                 latest: datetime | None = None, daily_cap: int | None = None) -> Slot:
    """Take the number's next sending slot and return when it starts (see reserve_slots)."""
    return reserve_slots(session, [number], per_second, now, latest=latest, daily_cap=daily_cap)[0]


def reserve_slots(session: so.Session, wanted: Sequence[str], per_second: float, now: datetime, *,
                  latest: datetime | None = None, daily_cap: int | None = None) -> list[Slot]:
    """Take one sending slot per entry of `wanted`, in order (a number may repeat); return when each starts.

    Slots are 1/per_second apart. Nothing is taken for an entry (`reserved` False) when its
    number's next free slot starts after `latest`, or when the number already has `daily_cap`
    slots this UTC day; `at` then says when to try again. The numbers' rows are read locked
    (FOR UPDATE on PostgreSQL; SQLite's transactions begin IMMEDIATE, holding the write lock),
    so workers never share a slot; a group's slots cost two statements, whatever its size.
    Commit soon after: other workers wait for these rows until then.
    """
    if per_second <= 0:
        raise ValueError(f"per_second must be positive, not {per_second!r}")
    if not wanted:
        return []
    interval = math.ceil(1_000_000 / per_second)
    now_us = _us(now)
    today = now_us // _US_PER_DAY
    latest_us = _us(latest) if latest is not None else None
    # In id order, so that two workers locking overlapping numbers cannot deadlock.
    rows = session.execute(
        sa.select(PhoneNumber.id, PhoneNumber.number, PhoneNumber.next_slot_us, PhoneNumber.cap_day,
                  PhoneNumber.cap_count)
        .where(PhoneNumber.number.in_(set(wanted))).order_by(PhoneNumber.id).with_for_update()).all()
    state = {row.number: [row.next_slot_us, row.cap_day, row.cap_count] for row in rows}
    ids = {row.number: row.id for row in rows}
    slots, taken = [], set()
    for number in wanted:
        if number not in state:
            raise NumberError(f"{number} is not one of our numbers; add it to [plugins.sms] numbers or "
                              f"`sequencer numbers assign {number} --owner EMAIL`")
        next_us, day, count = state[number]
        used_today = count if day == today else 0
        start = max(next_us, now_us)
        if daily_cap is not None and used_today >= daily_cap:
            slots.append(Slot(_instant((today + 1) * _US_PER_DAY), reserved=False))
        elif latest_us is not None and next_us > latest_us:
            slots.append(Slot(_instant(start), reserved=False))
        else:
            state[number] = [start + interval, today, used_today + 1]
            taken.add(number)
            slots.append(Slot(_instant(start), reserved=True))
    if not taken:
        return slots
    updates = [{"row_id": ids[number], "next_us": next_us, "day": day, "count": count}
               for number, (next_us, day, count) in state.items() if number in taken]
    table = PhoneNumber.__table__
    session.connection().execute(
        sa.update(table).where(table.c.id == sa.bindparam("row_id"))
        .values(next_slot_us=sa.bindparam("next_us"), cap_day=sa.bindparam("day"), cap_count=sa.bindparam("count")),
        updates)
    return slots


def _us(at: datetime) -> int:
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}; every instant must be aware")
    return (at - _EPOCH) // timedelta(microseconds=1)


def _instant(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)
