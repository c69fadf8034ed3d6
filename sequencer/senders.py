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
    """Return the number a touch goes out from; None when there is none to send from.

    A lead hears from one number for the whole conversation: the first text or call fixes it.
    Until then the lead's owner's own number is chosen, else one of the pool (the configured
    `pool` numbers and every number without an owner), the one fewest leads hear from.
    `pool_known`: the pool's numbers were added to the numbers table already (by this process).
    """
    with core.session() as session:
        if not pool_known:
            numbers.ensure(session, list(pool), core.now())
        # The lead, its owner and its number so far in one statement: most texts go to a lead who has one.
        lead_id, owner_id, sticky = session.execute(
            sa.select(Touch.lead_id, Lead.owner_id, PhoneNumber.number)
            .join(Lead, Lead.id == Touch.lead_id)
            .outerjoin(LeadNumber, LeadNumber.lead_id == Touch.lead_id)
            .outerjoin(PhoneNumber, PhoneNumber.id == LeadNumber.phone_number_id)
            .where(Touch.id == touch_id)).one()
        if sticky is not None:
            return sticky
        load = (sa.select(sa.func.count()).where(LeadNumber.phone_number_id == PhoneNumber.id)
                .correlate(PhoneNumber).scalar_subquery())
        # The owner's own numbers first, then the pool's: each by how many leads already hear from it.
        mine = PhoneNumber.owner_id == owner_id if owner_id is not None else sa.false()
        chosen = session.execute(
            sa.select(PhoneNumber.id, PhoneNumber.number).where(sa.or_(mine, PhoneNumber.owner_id.is_(None)))
            .order_by(sa.case((mine, 0), else_=1), load, PhoneNumber.id).limit(1)).first()
        if chosen is None:
            return None
        insert = (sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert)(LeadNumber)
        added = session.execute(insert.values(lead_id=lead_id, phone_number_id=chosen.id, assigned_at=core.now())
                                .on_conflict_do_nothing(index_elements=[LeadNumber.lead_id]))
        if added.rowcount == 0:
            return _sticky(session, lead_id)  # another worker fixed the lead's number first: theirs is the one
        return chosen.number


def number_slot(core: Core, number: str, per_second: float, daily_cap: int | None,
                latest: datetime | None = None) -> Slot:
    """Take the number's next sending slot (see sequencer.numbers.reserve_slot), in its own transaction."""
    with core.session() as session:
        return numbers.reserve_slot(session, number, per_second, core.now(), latest=latest, daily_cap=daily_cap)


def is_our_number(core: Core, number: str, pool: Sequence[str]) -> bool:
    """Tell whether a number (E.164) is ours: a configured pool number or one in the numbers table."""
    if number in pool:
        return True
    with core.session() as session:
        return session.scalar(sa.select(PhoneNumber.id).where(PhoneNumber.number == number)) is not None


def _sticky(session: so.Session, lead_id: int) -> str | None:
    return session.scalar(sa.select(PhoneNumber.number).join(LeadNumber, LeadNumber.phone_number_id == PhoneNumber.id)
                          .where(LeadNumber.lead_id == lead_id))

