"""Users (admins, ops, reps) and the mailboxes email goes out from."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from functools import cache

import sqlalchemy as sa
import sqlalchemy.orm as so
from werkzeug.security import check_password_hash, generate_password_hash

from sequencer.leads import LeadDataError, email_key, parse_phone, validate_zone
from sequencer.models import LoginFailure, Mailbox, Role, Task, User

ROLES = tuple(r.value for r in Role)
# admin ⊇ ops ⊇ rep: a role may do everything the roles below it may.
ROLE_RANK = {Role.rep: 1, Role.ops: 2, Role.admin: 3}
LOCALES = ("en", "ru")
# NIST SP 800-63B: at least 8 characters, no composition rules; the hash is scrypt (werkzeug's default).
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # hashing megabytes of "password" would be a cheap way to tie up a worker
# Sign-in attempts: this many failures for one address within the window refuse further attempts.
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)


class PeopleError(ValueError):
    """A user or mailbox cannot be created or changed; the message names the value and the fix."""


def _address(text: str, what: str) -> str:
    try:
        return email_key(text)
    except LeadDataError as exc:
        raise PeopleError(str(exc).replace("email", what, 1)) from None


def add_user(session: so.Session, email: str, role: str, *, name: str = "", timezone: str = "UTC",
             phone: str | None = None, locale: str = "en", password: str | None = None, now: datetime) -> User:
    """Create a user; the email is the login and must be new (any letter case). No password: no sign-in."""
    address = _address(email, "email")
    _check_role(role)
    _check_locale(locale)
    zone, number = _zone(timezone), _phone(phone)
    password_hash = hash_password(password) if password is not None else None
    if session.scalar(sa.select(User.id).where(User.email == address)) is not None:
        raise PeopleError(f"user {address} already exists; `sequencer users list` shows every user")
    user = User(email=address, role=Role(role), name=name, timezone=zone, phone=number, locale=locale,
                password_hash=password_hash, active=True, created_at=now)
    session.add(user)
    session.flush()
    return user


def set_user(session: so.Session, email: str, *, role: str | None = None, phone: str | None = None,
             timezone: str | None = None, locale: str | None = None, password: str | None = None,
             active: bool | None = None) -> tuple[User, list[str]]:
    """Change the given fields of a user (None leaves one as it is); return the user and the names changed.

    An empty phone removes the number. Every value is checked before anything changes.
    """
    user = find_user(session, email)
    changes: dict[str, object] = {}
    if role is not None:
        _check_role(role)
        changes["role"] = Role(role)
    if phone is not None:
        changes["phone"] = _phone(phone.strip() or None)
    if timezone is not None:
        changes["timezone"] = _zone(timezone)
    if locale is not None:
        _check_locale(locale)
        changes["locale"] = locale
    if active is not None:
        changes["active"] = active
    password_hash = hash_password(password) if password is not None else None
    changed = [field for field, value in changes.items() if getattr(user, field) != value]
    for field in changed:
        setattr(user, field, changes[field])
    if password_hash is not None:
        user.password_hash = password_hash
        changed.append("password")
    return user, changed


def hash_password(password: str) -> str:
    """Return the scrypt hash of a password that is long enough, or raise PeopleError."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PeopleError(f"the password has {len(password)} characters; use at least {MIN_PASSWORD_LENGTH}")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PeopleError(f"the password is longer than {MAX_PASSWORD_LENGTH} characters")
    return generate_password_hash(password)


def session_token(user: User) -> str:
    """Return what a sign-in session carries: the id and a digest of the password hash.

    Changing the password changes the digest, so every session signed in with the old one ends.
    """
    digest = hashlib.sha256((user.password_hash or "").encode()).hexdigest()[:16]
    return f"{user.id}.{digest}"


def user_for_token(session: so.Session, token: str) -> User | None:
    """Return the active user a session token belongs to, or None when it is stale or they cannot sign in."""
    user_id, _, _digest = token.partition(".")
    if not user_id.isdigit():
        return None
    user = session.get(User, int(user_id))
    if user is None or not user.active or user.password_hash is None or session_token(user) != token:
        return None
    return user


class TooManyFailures(Exception):
    """Too many wrong passwords for an address lately; retry_after is in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed sign-ins; try again in {retry_after} seconds")
        self.retry_after = retry_after


def authenticate(session: so.Session, email: str, password: str, *, now: datetime) -> User | None:
    """Return the user an email and password sign in, or None (the failure recorded for every worker to count).

    None says nothing more on purpose: a wrong password, an unknown address and a deactivated user
    look the same. Raises TooManyFailures once MAX_FAILURES failed within FAILURE_WINDOW, before
    looking at the password, so the limit holds for a right guess too.
    """
    address = email.strip().lower()[:320]
    since = now - FAILURE_WINDOW
    recent = list(session.scalars(sa.select(LoginFailure.failed_at).where(
        LoginFailure.email == address, LoginFailure.failed_at > since).order_by(LoginFailure.failed_at)))
    if len(recent) >= MAX_FAILURES:
        oldest_counted = recent[-MAX_FAILURES]
        raise TooManyFailures(max(1, int((oldest_counted + FAILURE_WINDOW - now).total_seconds()) + 1))
    user = session.scalar(sa.select(User).where(User.email == address))
    # An unknown address costs the same scrypt work as a known one, so timing does not tell them apart.
    ok = check_password_hash(user.password_hash if user and user.password_hash else _decoy_hash(),
                             password[:MAX_PASSWORD_LENGTH])
    if not ok or user is None or user.password_hash is None or not user.active:
        # Old rows of every address go, so the table holds only the window's failures.
        session.execute(sa.delete(LoginFailure).where(LoginFailure.failed_at <= since))
        session.add(LoginFailure(email=address, failed_at=now))
        return None
    session.execute(sa.delete(LoginFailure).where(LoginFailure.email == address))
    return user


@cache
def _decoy_hash() -> str:
    return generate_password_hash("not anyone's password")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise PeopleError(f"role '{role}' is unknown; use one of {', '.join(ROLES)}")


def _check_locale(locale: str) -> None:
    if locale not in LOCALES:
        raise PeopleError(f"locale '{locale}' is not supported; use one of {', '.join(LOCALES)}")


def _zone(timezone: str) -> str:
    try:
        return validate_zone(timezone)
    except LeadDataError as exc:
        raise PeopleError(str(exc)) from None


def _phone(phone: str | None) -> str | None:
    try:
        return parse_phone(phone, None) if phone else None
    except LeadDataError as exc:
        raise PeopleError(str(exc)) from None


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
