"""Users (admins, ops, reps) and the mailboxes email goes out from."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer.leads import LeadDataError, email_key, parse_phone, validate_zone
from sequencer.models import Mailbox, Role, Task, User

ROLES = tuple(r.value for r in Role)


class PeopleError(ValueError):
    """A user or mailbox cannot be created or changed; the message names the value and the fix."""


def _address(text: str, what: str) -> str:
    try:
        return email_key(text)
    except LeadDataError as exc:
        raise PeopleError(str(exc).replace("email", what, 1)) from None


def add_user(session: so.Session, email: str, role: str, *, name: str = "", timezone: str = "UTC",
             phone: str | None = None, now: datetime) -> User:
    """Create a user; the email is the login and must be new (any letter case)."""
    address = _address(email, "email")
    if role not in ROLES:
        raise PeopleError(f"role '{role}' is unknown; use one of {', '.join(ROLES)}")
    try:
        zone = validate_zone(timezone)
        number = parse_phone(phone, None) if phone else None
    except LeadDataError as exc:
        raise PeopleError(str(exc)) from None
    if session.scalar(sa.select(User.id).where(User.email == address)) is not None:
        raise PeopleError(f"user {address} already exists; `sequencer users list` shows every user")
    user = User(email=address, role=Role(role), name=name, timezone=zone, phone=number, created_at=now)
    session.add(user)
    session.flush()
    return user


def find_user(session: so.Session, email: str) -> User:
    """Return the user with this email (any letter case), or raise LookupError."""
    user = session.scalar(sa.select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise LookupError(f"no user {email.strip()}; add them with `sequencer users add`")
    return user


def list_users(session: so.Session) -> list[User]:
    """Return every user by email."""
    return list(session.scalars(sa.select(User).order_by(User.email)))


def add_mailbox(session: so.Session, address: str, *, owner_email: str, display_name: str = "",
                daily_cap: int = 200, signature: str = "", now: datetime) -> Mailbox:
    """Create an active mailbox owned by an existing user."""
    normalized = _address(address, "mailbox address")
    if daily_cap < 0:
        raise PeopleError(f"daily cap {daily_cap} is negative; give the number of emails a day, 0 to send none")
    owner = find_user(session, owner_email)
    if session.scalar(sa.select(Mailbox.id).where(Mailbox.address == normalized)) is not None:
        raise PeopleError(f"mailbox {normalized} already exists; `sequencer mailboxes list` shows every mailbox")
    mailbox = Mailbox(address=normalized, display_name=display_name, owner_id=owner.id, daily_cap=daily_cap,
                      signature=signature, state="active", transport={}, created_at=now)
    session.add(mailbox)
    session.flush()
    return mailbox


def find_mailbox(session: so.Session, address: str) -> Mailbox:
    """Return the mailbox with this address (any letter case), or raise LookupError."""
    mailbox = session.scalar(sa.select(Mailbox).where(Mailbox.address == address.strip().lower()))
    if mailbox is None:
        raise LookupError(f"no mailbox {address.strip()}; `sequencer mailboxes list` shows every mailbox")
    return mailbox


def hold_mailbox(session: so.Session, address: str, reason: str, now: datetime) -> Mailbox:
    """Stop sending from a mailbox until it is released; holding it again only updates the reason."""
    if not reason.strip():
        raise PeopleError("a hold needs a reason, so whoever releases it knows what to check")
    mailbox = find_mailbox(session, address)
    if mailbox.state != "held":
        mailbox.state, mailbox.held_at = "held", now
    mailbox.held_reason = reason.strip()
    return mailbox


def hold_for_sender_problem(session: so.Session, mailbox: Mailbox, reason: str, now: datetime) -> bool:
    """Hold a mailbox that a provider or a bounce blamed, and give every admin a task saying why.

    The fix is on our side (authentication, blocklist, rate limits), not the lead's. Returns False,
    alerting no one again, when the mailbox is already held.
    """
    if mailbox.state == "held":
        return False
    mailbox.state, mailbox.held_at, mailbox.held_reason = "held", now, reason[:1000]
    for admin_id in session.scalars(sa.select(User.id).where(User.role == Role.admin)):
        session.add(Task(owner_id=admin_id, lead_id=None, kind="alert", priority=50, due_at=now, created_at=now,
                         title=f"Mailbox {mailbox.address} is on hold"[:500],
                         instructions=f"{reason}\n\nFix the sending setup (`sequencer doctor`), then run "
                                      f"`sequencer mailboxes release {mailbox.address}`."))
    return True


def release_mailbox(session: so.Session, address: str, now: datetime) -> Mailbox:
    """Make a held mailbox active again and clear its hold."""
    mailbox = find_mailbox(session, address)
    mailbox.state, mailbox.held_reason, mailbox.held_at = "active", None, None
    return mailbox


def list_mailboxes(session: so.Session) -> list[tuple[Mailbox, str | None]]:
    """Return every mailbox with its owner's email, by address."""
    rows = session.execute(sa.select(Mailbox, User.email).outerjoin(User, Mailbox.owner_id == User.id)
                           .order_by(Mailbox.address))
    return [(mailbox, owner) for mailbox, owner in rows]
