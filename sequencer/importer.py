"""CSV lead import: validate each row, upsert by external_id or email, and report every bad line."""
from __future__ import annotations

import csv
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterator

import sqlalchemy as sa
import sqlalchemy.orm as so
from tqdm import tqdm

from sequencer.clock import iso_z
from sequencer.consent import add_consent, has_consent, resume_waiting_for_consent
from sequencer.leads import (
    GIVEN,
    LeadDataError,
    infer_zones,
    lead_domain,
    normalize_email,
    parse_phone,
    validate_country,
    validate_zone,
)
from sequencer.models import Lead, User
from sequencer.suppressions import Problem, blocked_leads

# Rows validated and written per flush: large enough to amortize the round trips, small
# enough that the duplicate lookup's IN lists stay far below SQLite's bound-variable limit.
CHUNK_SIZE = 500

# Columns mapped onto Lead attributes; every other column goes to Lead.custom.
KNOWN_COLUMNS = ("email", "phone", "external_id", "first_name", "last_name", "company", "title", "country",
                 "timezone", "owner", "consent_sms", "consent_voice")
# Consent columns: a cell is the consent's source; these cells say there is none. They record
# nothing and revoke nothing: a CRM export writes "no" where it holds no record, which is not
# the lead revoking one (`sequencer consent remove` and opt-out keywords do that).
CONSENT_COLUMNS = {"consent_sms": "sms", "consent_voice": "voice"}
NO_CONSENT_CELLS = frozenset({"no", "false", "0"})
# An ISO 8601 date, optionally with a time and an offset, anywhere in a consent cell.
_ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?)?(?![\d:])")
TEXT_COLUMNS = ("first_name", "last_name", "company", "title")

# Spellings CRM and spreadsheet exports use for our columns.
ALIASES = {
    "e_mail": "email", "email_address": "email", "mail": "email",
    "phone_number": "phone", "mobile": "phone", "mobile_phone": "phone", "telephone": "phone",
    "firstname": "first_name", "lastname": "last_name", "surname": "last_name",
    "company_name": "company", "organization": "company", "job_title": "title",
    "time_zone": "timezone", "tz": "timezone", "owner_email": "owner", "id": "external_id",
}


class CsvFormatError(ValueError):
    """The file as a whole cannot be read (encoding, header); the message names the file and the fix."""


@dataclass
class Record:
    """One CSV record: its first physical line, its values by column, or why it cannot be read."""

    line: int
    values: dict[str, str]
    error: str | None = None


class CsvFile:
    """A CSV file read as a stream of records, its header normalized to snake_case column names."""

    def __init__(self, stream: IO[str], name: str) -> None:
        self.name = name
        first = stream.readline()
        if first.startswith("\ufeff"):  # a BOM that the caller's open() did not strip
            first = first[1:]
        self._delimiter = _delimiter(first)
        self._reader = csv.reader(_chain(first, stream), delimiter=self._delimiter)
        try:
            header = next(self._reader, [])
        except csv.Error as exc:
            raise CsvFormatError(f"{name} line 1: the header cannot be read ({exc})") from None
        self.header = [h.strip() for h in header]
        self.columns = [column_name(h) for h in self.header]
        seen: set[str] = set()
        for raw, column in zip(self.header, self.columns):
            if column in seen:
                raise CsvFormatError(f"{name} line 1: column '{raw}' appears twice (as '{column}'); "
                                     f"rename or remove one of them")
            seen.add(column)

    def rows(self) -> Iterator[Record]:
        """Yield every non-blank record with the physical line it starts on (the header is line 1)."""
        previous_end = self._reader.line_num
        while True:
            try:
                fields = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise CsvFormatError(f"{self.name} line {self._reader.line_num}: {exc}") from None
            except UnicodeDecodeError as exc:
                raise CsvFormatError(f"{self.name} near line {previous_end + 1}: not UTF-8 text ({exc.reason}); "
                                     f"save the file as 'CSV UTF-8'") from None
            line, previous_end = previous_end + 1, self._reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if len(fields) > len(self.columns):
                yield Record(line, {}, f"{len(fields)} values but the header has {len(self.columns)} columns; "
                                       f"quote values that contain '{self._delimiter}'")
                continue
            # Spreadsheets drop trailing empty cells: a short row just has empty values.
            yield Record(line, {c: f.strip() for c, f in zip(self.columns, fields) if f.strip()})


def _chain(first: str, rest: IO[str]) -> Iterator[str]:
    yield first
    yield from rest


def _delimiter(header_line: str) -> str:
    # Excel writes ';' in locales where ',' is the decimal separator.
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def column_name(header: str) -> str:
    """Return the snake_case column name of a header cell ("First Name" -> first_name)."""
    name = "_".join(header.strip().lower().replace("-", " ").split())
    return ALIASES.get(name, name)


@contextmanager
def read_csv(source: str | os.PathLike[str] | IO[str]) -> Iterator[CsvFile]:
    """Open a CSV path or text stream as a CsvFile (UTF-8, BOM allowed)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            stream = path.open(encoding="utf-8-sig", newline="")
        except OSError as exc:
            raise CsvFormatError(f"{path}: cannot be opened ({exc.strerror})") from None
        with stream:
            try:
                yield CsvFile(stream, path.name)
            except UnicodeDecodeError as exc:
                raise CsvFormatError(f"{path.name}: not UTF-8 text ({exc.reason}); save it as 'CSV UTF-8'") from None
    else:
        yield CsvFile(source, getattr(source, "name", "<input>"))


@dataclass
class ImportReport:
    imported: int = 0
    updated: int = 0
    rejected: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    # Every lead created or updated, in file order; empty after a dry run.
    lead_ids: list[int] = field(default_factory=list)
    # Consents recorded from consent_* cells, and enrollments that waited for them and resumed.
    consents: int = 0
    resumed: int = 0
    # Lead id -> why it must not be enrolled (a suppression on all channels); empty after a dry run.
    not_enrollable: dict[int, str] = field(default_factory=dict)
    # The same, by line, so a dry run can show it too.
    suppressed: list[Problem] = field(default_factory=list)
    dry_run: bool = False

    @property
    def enrollable_ids(self) -> list[int]:
        return [i for i in self.lead_ids if i not in self.not_enrollable]


@dataclass
class _Row:
    line: int
    email: str | None
    email_key: str | None
    phone: str | None
    external_id: str | None
    country: str | None
    timezone: str | None
    owner_id: int | None
    fields: dict[str, str]
    custom: dict[str, str]
    # Channel -> (source, when given; None: the import time), from the consent_* cells.
    consents: dict[str, tuple[str, datetime | None]]
    # Channel -> the cell that says no.
    declined: dict[str, str]
    # Reported only if the row is imported: a rejected row gets its rejection alone.
    warnings: list[str]


def import_leads(session: so.Session, path_or_file: str | os.PathLike[str] | IO[str], *, now: datetime,
                 default_region: str | None, owner_email: str | None = None, dry_run: bool = False,
                 progress: bool = False, actor: str | None = None) -> ImportReport:
    """Import leads from a CSV file; bad rows are reported by line and the good ones still import.

    Rows are upserted by external_id, else by email (any letter case), including repeats
    within the file. Suppressions are never touched: a suppressed lead imports but is listed
    in `not_enrollable`. consent_sms / consent_voice cells record consent (by `actor`, through
    this file) and resume enrollments that waited for it. With dry_run everything is checked
    and nothing is written.
    """
    report = ImportReport(dry_run=dry_run)
    users = {email.lower(): user_id for user_id, email in session.execute(sa.select(User.id, User.email))}
    default_owner_id = None
    if owner_email:
        default_owner_id = users.get(owner_email.strip().lower())
        if default_owner_id is None:
            raise LeadDataError(f"owner '{owner_email}' is not a user; add them with `sequencer users add`")
    savepoint = session.begin_nested() if dry_run else None
    seen_ids: set[int] = set()
    with read_csv(path_or_file) as csv_file:
        recorded_by = f"{actor}, import of {csv_file.name}" if actor else f"import of {csv_file.name}"
        if "email" not in csv_file.columns and "phone" not in csv_file.columns:
            found = ", ".join(csv_file.header) or "(nothing)"
            raise CsvFormatError(f"{csv_file.name}: no email or phone column; the header has: {found}. "
                                 f"A lead needs an email or a phone: add a column named email or phone")
        bar = tqdm(total=_count_rows(path_or_file), unit="row", desc=f"importing {csv_file.name}",
                   file=sys.stderr, disable=not progress)
        chunk: list[_Row] = []
        with bar:
            for record in csv_file.rows():
                bar.update(1)
                if record.error:
                    report.rejected.append(Problem(record.line, record.error))
                    continue
                row = _parse(record, report, users=users, default_owner_id=default_owner_id,
                             default_region=default_region, now=now)
                if row is not None:
                    chunk.append(row)
                if len(chunk) >= CHUNK_SIZE:
                    _apply(session, chunk, report, seen_ids, now, recorded_by)
                    chunk = []
            if chunk:
                _apply(session, chunk, report, seen_ids, now, recorded_by)
    if savepoint is not None:
        savepoint.rollback()
        report.lead_ids.clear()
        report.not_enrollable.clear()
    for problems in (report.rejected, report.warnings, report.suppressed):
        problems.sort(key=lambda p: p.line)
    return report


def _count_rows(source: str | os.PathLike[str] | IO[str]) -> int | None:
    # A total for the progress bar's ETA; a stream cannot be read twice, so it gets none.
    if not isinstance(source, (str, os.PathLike)):
        return None
    with open(source, "rb") as f:
        return max(sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b"")) - 1, 0)


def _parse(record: Record, report: ImportReport, *, users: dict[str, int], default_owner_id: int | None,
           default_region: str | None, now: datetime) -> _Row | None:
    """Validate one record; return None (and report why) when the row cannot be imported."""
    values, line = record.values, record.line
    warnings: list[str] = []

    def reject(message: str) -> None:
        report.rejected.append(Problem(line, message))

    for column in (*TEXT_COLUMNS, "external_id"):
        limit = Lead.__table__.c[column].type.length
        if column in values and len(values[column]) > limit:
            return reject(f"{column} is {len(values[column])} characters long; the limit is {limit}")
    email = key = None
    if values.get("email"):
        try:
            email = normalize_email(values["email"])
        except LeadDataError as exc:
            return reject(str(exc))
        key = email.lower()  # email_key() without validating the address twice
    country = None
    if values.get("country"):
        try:
            country = validate_country(values["country"])
        except LeadDataError as exc:
            warnings.append(f"{exc}; imported without a country")
    phone = None
    if values.get("phone"):
        try:
            phone = parse_phone(values["phone"], country or default_region)
        except LeadDataError as exc:
            if email is None and not values.get("external_id"):
                return reject(f"{exc}, and there is no email; a lead needs a valid email or phone")
            warnings.append(f"{exc}; imported without a phone")
    if email is None and phone is None and not values.get("external_id"):
        return reject("no email and no phone; a lead needs at least one")
    zone = None
    if values.get("timezone"):
        try:
            zone = validate_zone(values["timezone"])
        except LeadDataError as exc:
            return reject(str(exc))
    consents: dict[str, tuple[str, datetime | None]] = {}
    declined: dict[str, str] = {}
    for column, channel in CONSENT_COLUMNS.items():
        cell = values.get(column)
        if not cell:
            continue
        if cell.lower() in NO_CONSENT_CELLS:
            declined[channel] = cell
            continue
        try:
            consents[channel] = (" ".join(cell.split()), _consent_time(cell, now))
        except ValueError as exc:
            return reject(f"{column} '{cell}': {exc}")
    owner_id = default_owner_id
    if values.get("owner"):
        owner_id = users.get(values["owner"].lower())
        if owner_id is None:
            return reject(f"owner '{values['owner']}' is not a user; add them with `sequencer users add` "
                          f"or fix the owner column")
    return _Row(
        line=line, email=email, email_key=key, phone=phone, external_id=values.get("external_id"),
        country=country, timezone=zone, owner_id=owner_id,
        fields={c: values[c] for c in TEXT_COLUMNS if values.get(c)},
        custom={c: v for c, v in values.items() if c not in KNOWN_COLUMNS}, consents=consents, declined=declined,
        warnings=warnings,
    )


def _consent_time(cell: str, now: datetime) -> datetime | None:
    """Return the time an ISO date in a consent cell gives (a date alone or no offset: UTC), else None."""
    match = _ISO_DATE.search(cell)
    if match is None:
        return None
    try:
        at = datetime.fromisoformat(match[0])
    except ValueError:
        raise ValueError(f"'{match[0]}' is not a valid date; write it as YYYY-MM-DD") from None
    at = at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)
    if at > now:
        raise ValueError(f"'{match[0]}' is after the import ({iso_z(now)}); give the date the consent was given")
    return at


def _apply(session: so.Session, rows: list[_Row], report: ImportReport, seen_ids: set[int], now: datetime,
           recorded_by: str) -> None:
    """Create or update the leads of one chunk with one lookup query and one flush, then record its consents."""
    external_ids = sorted({r.external_id for r in rows if r.external_id})
    keys = sorted({r.email_key for r in rows if r.email_key})
    existing = session.scalars(sa.select(Lead).where(
        sa.or_(Lead.external_id.in_(external_ids), Lead.email_normalized.in_(keys)))).all()
    by_external_id = {lead.external_id: lead for lead in existing if lead.external_id}
    by_email = {lead.email_normalized: lead for lead in existing if lead.email_normalized}
    # Leads created in this chunk have no id before the flush: name them by their line.
    created_on: dict[int, int] = {}
    written: list[tuple[_Row, Lead]] = []

    def name(lead: Lead) -> str:
        if id(lead) in created_on:
            return f"the lead of line {created_on[id(lead)]}"
        return f"lead {lead.id}" + (f" (external_id '{lead.external_id}')" if lead.external_id else "")

    for row in rows:
        lead = by_external_id.get(row.external_id) if row.external_id else None
        holder = by_email.get(row.email_key) if row.email_key else None
        if lead is None and holder is not None:
            if row.external_id and holder.external_id and holder.external_id != row.external_id:
                report.rejected.append(Problem(row.line, f"email {row.email} already belongs to {name(holder)}; "
                                                         f"fix the email or the external_id"))
                continue
            lead = holder
        elif lead is not None and holder is not None and holder is not lead:
            report.rejected.append(Problem(row.line, f"email {row.email} already belongs to {name(holder)}, not to "
                                                     f"external_id '{row.external_id}'; fix one of them"))
            continue
        if lead is None:
            if row.email is None and row.phone is None:
                report.rejected.append(Problem(row.line, "no email and no phone; a lead needs at least one"))
                continue
            lead = Lead(created_at=now, custom={}, candidate_zones=[])
            session.add(lead)
            created_on[id(lead)] = row.line
            report.imported += 1
        else:
            report.updated += 1
        old_key = lead.email_normalized
        _update(lead, row, now)
        if old_key != lead.email_normalized:
            by_email.pop(old_key, None)
        if lead.email_normalized:
            by_email[lead.email_normalized] = lead
        if lead.external_id:
            by_external_id[lead.external_id] = lead
        written.append((row, lead))
        report.warnings.extend(Problem(row.line, message) for message in row.warnings)
    session.flush()
    for _row, lead in written:
        if lead.id not in seen_ids:
            seen_ids.add(lead.id)
            report.lead_ids.append(lead.id)
    _record_consents(session, written, report, now, recorded_by)
    blocked = blocked_leads(session, [lead for _row, lead in written], "all")
    for row, lead in written:
        if lead.id in blocked:
            report.not_enrollable[lead.id] = blocked[lead.id]
            report.suppressed.append(Problem(row.line, blocked[lead.id]))


def _record_consents(session: so.Session, written: list[tuple[_Row, Lead]], report: ImportReport, now: datetime,
                     recorded_by: str) -> None:
    """Record the chunk's consent cells (after the flush: the audit log needs lead ids) and resume their leads."""
    consented: dict[str, list[int]] = {}
    for row, lead in written:
        for channel, (source, at) in row.consents.items():
            current = (lead.consents or {}).get(channel)
            # Importing the same file again keeps the first record, and its time.
            if has_consent(lead, channel) and current["source"] == source:
                continue
            add_consent(session, lead, channel, source, at or now, now, recorded_by)
            consented.setdefault(channel, []).append(lead.id)
            report.consents += 1
        for channel, cell in row.declined.items():
            if has_consent(lead, channel):
                report.warnings.append(Problem(row.line, f"consent_{channel} '{cell}' leaves "
                                                         f"the lead's {channel} consent as it is; "
                                                         f"`sequencer consent remove` revokes it"))
    for channel, lead_ids in consented.items():
        report.resumed += resume_waiting_for_consent(session, lead_ids, channel, now)


def _update(lead: Lead, row: _Row, now: datetime) -> None:
    """Copy a row onto a lead; empty cells keep what the lead already has."""
    if row.email and row.email_key != lead.email_normalized:
        lead.email, lead.email_normalized, lead.domain = row.email, row.email_key, lead_domain(row.email)
        lead.email_invalid = False  # a new address has not bounced yet
    elif row.email:
        lead.email = row.email
    if row.phone and row.phone != lead.phone:
        lead.phone, lead.phone_wrong = row.phone, False
    if row.external_id:
        lead.external_id = row.external_id
    if row.country:
        lead.country = row.country
    for column, value in row.fields.items():
        setattr(lead, column, value)
    if row.owner_id is not None:
        lead.owner_id = row.owner_id
    if row.custom:
        # Reassigned, not mutated: the JSON column does not track in-place changes.
        lead.custom = {**(lead.custom or {}), **row.custom}
    if row.timezone:
        lead.timezone, lead.timezone_source, lead.candidate_zones = row.timezone, GIVEN, [row.timezone]
    elif lead.timezone_source != GIVEN and (row.phone or row.country or lead.timezone_source is None):
        zones, source = infer_zones(lead.phone, lead.country)
        lead.timezone = zones[0] if len(zones) == 1 else None
        lead.timezone_source, lead.candidate_zones = source, zones
    lead.updated_at = now

