"""Suppressions: emails, phones and domains that no cadence may touch again, matched by hash."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, TYPE_CHECKING, Iterable, Sequence

import sqlalchemy as sa
import sqlalchemy.orm as so
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.dialects import postgresql

from sequencer.exits import end_enrollments
from sequencer.leads import LeadDataError, email_key, lead_domain, parse_phone
from sequencer.models import LIVE_STATES, Enrollment, Lead, Step, Suppression, Task, Touch

if TYPE_CHECKING:
    from sequencer.plugins import Plugins

KINDS = ("email", "phone", "domain")
CHANNELS = ("all", "email", "sms", "voice")


@dataclass
class Problem:
    """One line of a CSV file that needs attention."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.line}: {self.message}"


@dataclass
class SuppressionImport:
    added: int = 0
    existing: int = 0
    rejected: list[Problem] = field(default_factory=list)
    # (kind, normalized value, channel) of every good line, new or already there: what `enforce` takes.
    entries: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class Enforcement:
    """What enforcing suppressions on the leads already in cadences did."""

    enrollments_ended: int = 0
    tasks_closed: int = 0


def detect_kind(value: str) -> str:
    """Guess a value's kind: an @ makes an email, a leading + or digit a phone, anything else a domain."""
    text = value.strip()
    if "@" in text.lstrip("@"):
        return "email"
    if text[:1] == "+" or (text[:1].isdigit() and not _looks_like_domain(text)):
        return "phone"
    return "domain"


def _looks_like_domain(text: str) -> bool:
    # "3m.com" starts with a digit but is a domain; phone numbers never carry letters.
    return any(c.isalpha() for c in text) and "." in text


def normalize(kind: str, value: str, *, default_region: str | None = None) -> str:
    """Return the stored form of a value: lowercased email, E.164 phone, lowercased domain without @."""
    text = (value or "").strip()
    if kind == "email":
        return email_key(text)
    if kind == "phone":
        return parse_phone(text, default_region)
    if kind == "domain":
        domain = text.lstrip("@").rstrip(".")
        try:
            # The same IDNA and case rules as the domain of a lead's normalized email.
            return validate_email(f"postmaster@{domain}", check_deliverability=False).domain.lower()
        except EmailNotValidError as exc:
            raise LeadDataError(f"domain '{text}' is not valid: {exc}") from None
    raise LeadDataError(f"suppression kind '{kind}' is unknown; use one of {', '.join(KINDS)}")


def value_hash(normalized: str) -> str:
    """Return the SHA-256 of a normalized value: what stays after a person is erased."""
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()


def _check_channel(channel: str) -> str:
    if channel not in CHANNELS:
        raise LeadDataError(f"channel '{channel}' is unknown; use one of {', '.join(CHANNELS)}")
    return channel


def find(session: so.Session, kind: str, value: str, channel: str = "all", *,
         default_region: str | None = None) -> Suppression | None:
    """Return the suppression of a value on exactly this channel scope, or None."""
    _check_channel(channel)
    return _find(session, kind, value_hash(normalize(kind, value, default_region=default_region)), channel)


def _find(session: so.Session, kind: str, digest: str, channel: str) -> Suppression | None:
    return session.scalar(sa.select(Suppression).where(
        Suppression.kind == kind, Suppression.value_hash == digest, Suppression.channel == channel))


def add(session: so.Session, kind: str, value: str, *, reason: str, source: str, now: datetime,
        channel: str = "all", default_region: str | None = None) -> Suppression:
    """Suppress a value on a channel (or all); adding it again returns the existing entry unchanged."""
    _check_channel(channel)
    entry, _created = _add(session, kind, normalize(kind, value, default_region=default_region),
                           reason=reason, source=source, now=now, channel=channel)
    return entry


def _add(session: so.Session, kind: str, normalized: str, *, reason: str, source: str, now: datetime,
         channel: str) -> tuple[Suppression, bool]:
    digest = value_hash(normalized)
    existing = _find(session, kind, digest, channel)
    if existing is not None:
        return existing, False
    entry = Suppression(kind=kind, value=normalized, value_hash=digest, channel=channel,
                        reason=reason or "", source=source[:50], created_at=now)
    try:
        # A savepoint, so that a concurrent add of the same value loses cleanly instead of
        # aborting the caller's transaction.
        with session.begin_nested():
            session.add(entry)
    except sa.exc.IntegrityError:
        existing = _find(session, kind, digest, channel)
        if existing is None:
            raise
        return existing, False
    return entry, True


def remove(session: so.Session, kind: str, value: str, channel: str = "all", *,
           default_region: str | None = None) -> bool:
    """Lift a suppression; return False when there was none for that value and channel."""
    _check_channel(channel)
    digest = value_hash(normalize(kind, value, default_region=default_region))
    result = session.execute(sa.delete(Suppression).where(
        Suppression.kind == kind, Suppression.value_hash == digest, Suppression.channel == channel))
    return result.rowcount > 0


def list_(session: so.Session) -> list[Suppression]:
    """Return every suppression, oldest first."""
    return list(session.scalars(sa.select(Suppression).order_by(Suppression.created_at, Suppression.id)))


def import_csv(session: so.Session, path: str | os.PathLike[str] | IO[str], *, now: datetime, source: str,
               default_region: str | None = None, channel: str = "all") -> SuppressionImport:
    """Add the suppressions of a CSV file; bad lines are reported as `LINE: reason` and the others kept.

    Columns: `value` (kind from a `kind` column, else guessed) or any of `email`, `phone`,
    `domain`; optional `reason` and `channel`.
    """
    # Imported here: the importer imports this module for blocked_leads().
    from sequencer.importer import CsvFormatError, read_csv

    report = SuppressionImport()
    with read_csv(path) as csv_file:
        value_columns = [c for c in ("value", "email", "phone", "domain") if c in csv_file.columns]
        if not value_columns:
            found = ", ".join(csv_file.columns) or "(nothing)"
            raise CsvFormatError(f"{csv_file.name}: no value, email, phone or domain column; the header has: {found}")
        for record in csv_file.rows():
            line, row = record.line, record.values
            if record.error:
                report.rejected.append(Problem(line, record.error))
                continue
            pairs = []
            for column in value_columns:
                value = row.get(column)
                if not value:
                    continue
                if column == "value":
                    kind = (row.get("kind") or detect_kind(value)).lower()
                else:
                    kind = column
                pairs.append((kind, value))
            if not pairs:
                report.rejected.append(Problem(line, f"no value; fill one of the columns {', '.join(value_columns)}"))
                continue
            row_channel = (row.get("channel") or channel).lower()
            try:
                _check_channel(row_channel)
                checked = [(kind, normalize(kind, value, default_region=default_region)) for kind, value in pairs]
            except LeadDataError as exc:
                report.rejected.append(Problem(line, str(exc)))
                continue
            for kind, normalized in checked:
                report.entries.append((kind, normalized, row_channel))
                _entry, created = _add(session, kind, normalized, reason=row.get("reason") or "", source=source,
                                       now=now, channel=row_channel)
                if created:
                    report.added += 1
                else:
                    report.existing += 1
    return report


def _keys(lead: Lead) -> list[tuple[str, str]]:
    """Return the (kind, hash) pairs under which a lead can be suppressed."""
    keys = []
    email = lead.email_normalized
    if email is None and lead.email:
        try:
            email = email_key(lead.email)
        except LeadDataError:
            email = lead.email.strip().lower()
    if email:
        keys.append(("email", value_hash(email)))
    domain = lead.domain or lead_domain(email)
    if domain:
        # A suppressed company domain covers its subdomains too (eu.example.com under example.com).
        labels = domain.lower().split(".")
        keys.extend(("domain", value_hash(".".join(labels[i:]))) for i in range(len(labels) - 1))
    if lead.phone:
        keys.append(("phone", value_hash(lead.phone)))
    return keys


def _in(session: so.Session, column: sa.ColumnElement[str], values: Sequence[str]) -> sa.ColumnElement[bool]:
    """Return `column IN values` with the values as one bound parameter whatever their number.

    An IN list would hit SQLite's limit on bound variables for large batches and make each
    batch size a new statement.
    """
    if session.get_bind().dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(sa.String)))
    table = sa.func.json_each(sa.bindparam(None, json.dumps(list(values)), type_=sa.String)).table_valued("value")
    return column.in_(sa.select(table.c.value))


def blocked_leads(session: so.Session, leads: Sequence[Lead], channel: str) -> dict[int, str]:
    """Return lead id -> reason for leads whose email, email domain (or a parent) or phone is suppressed.

    One query whatever the number of leads. A suppression on "all" blocks every channel, including
    ones only plugins or steps know ("task"); asking for channel "all" finds only those. Matching is
    by hash, so an erased entry still blocks.
    """
    by_key: dict[tuple[str, str], list[int]] = {}
    for lead in leads:
        for key in _keys(lead):
            by_key.setdefault(key, []).append(lead.id)
    if not by_key:
        return {}
    hashes = sorted({digest for _kind, digest in by_key})
    channels = ["all"] if channel == "all" else ["all", channel]
    rows = session.execute(
        sa.select(Suppression.kind, Suppression.value_hash, Suppression.value, Suppression.channel, Suppression.reason)
        .where(Suppression.kind.in_(KINDS), _in(session, Suppression.value_hash, hashes),
               Suppression.channel.in_(channels))
        .order_by(Suppression.id)
    ).all()
    # Email before phone before domain: the most specific reason is the one a person reads.
    rows = sorted(rows, key=lambda r: KINDS.index(r.kind) if r.kind in KINDS else len(KINDS))
    blocked: dict[int, str] = {}
    for row in rows:
        for lead_id in by_key.get((row.kind, row.value_hash), ()):
            if lead_id not in blocked:
                blocked[lead_id] = describe(row.kind, row.value, row.channel, row.reason)
    return blocked


def describe(kind: str, value: str | None, channel: str, reason: str) -> str:
    """Say why a lead is blocked, in words an operator reads in a report."""
    what = f"{kind} {value}" if value else f"{kind} (erased)"
    scope = "all channels" if channel == "all" else channel
    return f"{what} is suppressed on {scope}" + (f": {reason}" if reason else "")


def is_blocked(session: so.Session, lead: Lead, channel: str) -> str | None:
    """Return why a single lead is blocked on `channel`, or None when it may be contacted."""
    return blocked_leads(session, [lead], channel).get(lead.id)


# Enrollments are ended in slices of this many ids: end_enrollments takes an id list.
_END_SLICE = 5000


def enforce(session: so.Session, entries: Iterable[tuple[str, str, str]], *, reason: str, now: datetime,
            plugins: Plugins | None = None) -> Enforcement:
    """Stop contacting the leads these suppressions match: end their enrollments, close their open tasks.

    entries are (kind, normalized value, channel). A suppression on "all" ends every live
    enrollment of the lead and closes every open task, reply tasks included. One on a single
    channel ends the enrollments whose next step is on that channel (the engine would end them
    as `removed` on its next tick; now their task closes at once too) and closes the open tasks
    of that channel; enrollments now on another step go on and end when they reach one on the
    suppressed channel. A handful of statements per channel whatever the number of entries.
    """
    by_channel: dict[str, dict[str, set[str]]] = {}
    for kind, value, channel in entries:
        by_channel.setdefault(channel, {k: set() for k in KINDS})[kind].add(value)
    report = Enforcement()
    for channel, values in by_channel.items():
        leads = _matching_leads(session, values)
        if leads is None:
            continue
        exit_reason = f"suppressed: {reason}"
        enrollments = sa.select(Enrollment.id).where(Enrollment.lead_id.in_(leads),
                                                     Enrollment.state.in_(LIVE_STATES))
        tasks = sa.update(Task).where(Task.lead_id.in_(leads), Task.state == "open")
        if channel != "all":
            enrollments = enrollments.join(Step, sa.and_(Step.cadence_id == Enrollment.cadence_id,
                                                         Step.position == Enrollment.step_position)) \
                .where(Step.channel == channel)
            tasks = tasks.where(sa.exists().where(Touch.id == Task.touch_id, Touch.channel == channel))
        # Tasks first, so that each carries the suppression as its reason (reply tasks included).
        closed = session.execute(tasks.values(state="skipped", notes=exit_reason, completed_at=now)
                                 .execution_options(synchronize_session=False))
        report.tasks_closed += closed.rowcount
        ids = list(session.scalars(enrollments))
        for start in range(0, len(ids), _END_SLICE):
            report.enrollments_ended += len(end_enrollments(session, ids[start:start + _END_SLICE], state="removed",
                                                            reason=exit_reason, now=now, plugins=plugins))
    return report


def _matching_leads(session: so.Session, values: dict[str, set[str]]) -> sa.Select[tuple[int]] | None:
    """Return a query of the ids of the leads, in a cadence or with an open task, that these values match."""
    in_play = sa.or_(
        sa.exists().where(Enrollment.lead_id == Lead.id, Enrollment.state.in_(LIVE_STATES)),
        sa.exists().where(Task.lead_id == Lead.id, Task.state == "open"),
    )
    domains: set[str] = set()
    if values["domain"]:
        # A suppressed domain covers its subdomains (as in blocked_leads): compare each domain of
        # a lead in play, and its parents, with the set, then select those domains exactly.
        for (domain,) in session.execute(sa.select(Lead.domain).where(Lead.domain.is_not(None), in_play).distinct()):
            labels = domain.lower().split(".")
            if any(".".join(labels[i:]) in values["domain"] for i in range(len(labels) - 1)):
                domains.add(domain)
    matches = [_in(session, column, sorted(found)) for column, found in
               ((Lead.email_normalized, values["email"]), (Lead.phone, values["phone"]), (Lead.domain, domains))
               if found]
    if not matches:
        return None
    return sa.select(Lead.id).where(sa.or_(*matches), in_play)
