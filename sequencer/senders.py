"""What a channel that sends from our phone numbers (sender_kind "number") asks of the core.

Plugins reach these as Core methods (`core.sender_number(touch_id, pool)` and so on,
sequencer.receiving.PluginCore); each function takes that Core first and uses only its public side.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from sequencer import numbers
from sequencer.channels import Core
from sequencer.models import Lead, LeadNumber, PhoneNumber, Touch
from sequencer.numbers import Slot


def sender_number(core: Core, touch_id: int, pool: Sequence[str], *, pool_known: bool = False) -> str | None:
    """Return the number a touch goes out from; None when there is none to send from (see sender_numbers)."""
    return sender_numbers(core, [touch_id], pool, pool_known=pool_known).get(touch_id)


def sender_numbers(core: Core, touch_ids: Sequence[int], pool: Sequence[str], *,
                   pool_known: bool = False) -> dict[int, str | None]:
    """Return the number each touch goes out from (None: there is none to send from), in one transaction.

    A lead hears from one number for the whole conversation: the first text or call fixes it.
    Until then the lead's owner's own number is chosen, else one of the pool (the configured
    `pool` numbers and every number without an owner), the one fewest leads hear from.
    `pool_known`: the pool's numbers were added to the numbers table already (by this process).
    A channel sends a group of texts at a time: choosing all their numbers at once keeps the
    core's work per text to a share of a few statements.
    """
    if not touch_ids:
        return {}
    with core.session() as session:
        if not pool_known:
            numbers.ensure(session, list(pool), core.now())
        # Each touch's lead, its owner and its number so far: most texts go to a lead who has one.
        rows = session.execute(
            sa.select(Touch.id, Touch.lead_id, Lead.owner_id, PhoneNumber.number)
            .join(Lead, Lead.id == Touch.lead_id)
            .outerjoin(LeadNumber, LeadNumber.lead_id == Touch.lead_id)
            .outerjoin(PhoneNumber, PhoneNumber.id == LeadNumber.phone_number_id)
            .where(Touch.id.in_(list(touch_ids)))).all()
        by_lead: dict[int, str | None] = {row.lead_id: row.number for row in rows if row.number is not None}
        unassigned = {row.lead_id: row.owner_id for row in rows if row.number is None}
        if unassigned:
            by_lead.update(_assign(session, unassigned, core.now()))
        return {row.id: by_lead.get(row.lead_id) for row in rows}


def _assign(session: so.Session, owners: dict[int, int | None], now: datetime) -> dict[int, str | None]:
    """Fix a number for each lead (lead id -> owner id) that has none yet; return lead id -> number."""
    owner_ids = {owner for owner in owners.values() if owner is not None}
    load = (sa.select(sa.func.count()).where(LeadNumber.phone_number_id == PhoneNumber.id)
            .correlate(PhoneNumber).scalar_subquery())
    candidates = session.execute(
        sa.select(PhoneNumber.id, PhoneNumber.number, PhoneNumber.owner_id, load.label("load"))
        .where(sa.or_(PhoneNumber.owner_id.is_(None), PhoneNumber.owner_id.in_(owner_ids)))
        .order_by(PhoneNumber.id)).all()
    leads_on = {row.id: row.load for row in candidates}
    chosen: dict[int, tuple[int, str]] = {}
    for lead_id, owner_id in owners.items():
        # The owner's own numbers first, then the pool's: each by how many leads already hear from it.
        mine = [row for row in candidates if owner_id is not None and row.owner_id == owner_id]
        choices = mine or [row for row in candidates if row.owner_id is None]
        if choices:
            best = min(choices, key=lambda row: (leads_on[row.id], row.id))
            leads_on[best.id] += 1
            chosen[lead_id] = (best.id, best.number)
    if not chosen:
        return {}
    insert = (sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert)(LeadNumber)
    # executemany with RETURNING (SQLAlchemy's insertmanyvalues): one cached statement whatever the group's size.
    added = set(session.scalars(
        insert.on_conflict_do_nothing(index_elements=[LeadNumber.lead_id]).returning(LeadNumber.lead_id),
        [{"lead_id": lead_id, "phone_number_id": number_id, "assigned_at": now}
         for lead_id, (number_id, _) in chosen.items()]))
    fixed = {lead_id: number for lead_id, (_, number) in chosen.items() if lead_id in added}
    raced = [lead_id for lead_id in chosen if lead_id not in added]
    if raced:
        # Another worker fixed these leads' numbers first: theirs are the ones.
        fixed.update(session.execute(
            sa.select(LeadNumber.lead_id, PhoneNumber.number)
            .join(PhoneNumber, PhoneNumber.id == LeadNumber.phone_number_id)
            .where(LeadNumber.lead_id.in_(raced))).all())
    return fixed


def number_slot(core: Core, number: str, per_second: float, daily_cap: int | None,
                latest: datetime | None = None) -> Slot:
    """Take the number's next sending slot (see sequencer.numbers.reserve_slot), in its own transaction."""
    return number_slots(core, [number], per_second, daily_cap, latest)[0]


def number_slots(core: Core, wanted: Sequence[str], per_second: float, daily_cap: int | None,
                 latest: datetime | None = None) -> list[Slot]:
    """Take one sending slot per entry of `wanted` (a number may repeat), in order, in one transaction."""
    with core.session() as session:
        return numbers.reserve_slots(session, wanted, per_second, core.now(), latest=latest, daily_cap=daily_cap)


def is_our_number(core: Core, number: str, pool: Sequence[str]) -> bool:
    """Tell whether a number (E.164) is ours: a configured pool number or one in the numbers table."""
    if number in pool:
        return True
    with core.session() as session:
        return session.scalar(sa.select(PhoneNumber.id).where(PhoneNumber.number == number)) is not None

