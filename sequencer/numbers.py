"""The phone numbers we text and call from: a rep's own or the team pool's, and their sending slots.

SMS and voice share these numbers, so they are core. The per-number rate and daily cap must
hold across any number of workers: `reserve_slot` takes a slot with one conditional UPDATE,
which PostgreSQL serializes on the row lock and SQLite on its single writer.
"""
from __future__ import annotations

import math
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
    """Take the number's next sending slot and return when it starts.

    Slots are 1/per_second apart. Nothing is taken (`reserved` False) when the next free
    slot starts after `latest`, or when the number already has `daily_cap` slots this UTC
    day; `at` then says when to try again. Commit soon after: on PostgreSQL the row stays
    locked against other workers until then.
    """
    if per_second <= 0:
        raise ValueError(f"per_second must be positive, not {per_second!r}")
    interval = math.ceil(1_000_000 / per_second)
    now_us = _us(now)
    today = now_us // _US_PER_DAY
    start = sa.case((PhoneNumber.next_slot_us > now_us, PhoneNumber.next_slot_us), else_=now_us)
    query = sa.update(PhoneNumber).where(PhoneNumber.number == number)
    if latest is not None:
        query = query.where(PhoneNumber.next_slot_us <= _us(latest))
    if daily_cap is not None:
        query = query.where(sa.or_(PhoneNumber.cap_day != today, PhoneNumber.cap_count < daily_cap))
    # SET expressions read the row as it was before the UPDATE, on both databases.
    query = query.values(next_slot_us=start + interval,
                         cap_count=sa.case((PhoneNumber.cap_day == today, PhoneNumber.cap_count + 1), else_=1),
                         cap_day=today).returning(PhoneNumber.next_slot_us)
    taken = session.execute(query.execution_options(synchronize_session=False)).scalar()
    if taken is not None:
        return Slot(_instant(taken - interval), reserved=True)
    row = session.execute(sa.select(PhoneNumber.next_slot_us, PhoneNumber.cap_day, PhoneNumber.cap_count)
                          .where(PhoneNumber.number == number)).one_or_none()
    if row is None:
        raise NumberError(f"{number} is not one of our numbers; add it to [plugins.sms] numbers or "
                          f"`sequencer numbers assign {number} --owner EMAIL`")
    if daily_cap is not None and row.cap_day == today and row.cap_count >= daily_cap:
        return Slot(_instant((today + 1) * _US_PER_DAY), reserved=False)
    return Slot(_instant(max(row.next_slot_us, now_us)), reserved=False)


def _us(at: datetime) -> int:
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}; every instant must be aware")
    return (at - _EPOCH) // timedelta(microseconds=1)


def _instant(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)
