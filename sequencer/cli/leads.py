"""`sequencer leads ...`, `sequencer enroll` and `sequencer suppress ...`: leads in, and who may not be contacted."""
from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer import audit, suppressions
from sequencer.cli.base import CliState, UserError, emit, format_option, pass_state
from sequencer.importer import CsvFormatError, import_leads
from sequencer.leads import LeadDataError, find_lead
from sequencer.models import Cadence, Lead, User

if TYPE_CHECKING:
    from sequencer.enrollments import EnrollReport


def register(main: click.Group) -> None:
    main.add_command(leads)
    main.add_command(enroll)
    main.add_command(suppress)


@click.group()
def leads() -> None:
    """Leads: import from CSV and list."""


@leads.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--owner", "owner_email", metavar="EMAIL", help="Owner of rows without an owner column value.")
@click.option("--cadence", "cadence_name", metavar="NAME", help="Enroll the imported, non-suppressed leads.")
@click.option("--dry-run", is_flag=True, help="Check every row and report; write nothing.")
@pass_state
def import_(state: CliState, file: Path, owner_email: str | None, cadence_name: str | None, dry_run: bool) -> None:
    """Import leads from a CSV file; print each rejected row as LINE: reason.

    Columns: email, phone, external_id, first_name, last_name, company, title, country,
    timezone, owner, consent_sms, consent_voice; any other column becomes a custom field.
    Exit status 1 if a row was rejected.
    """
    rt = state.runtime()
    now = rt.now()
    enrolled = None
    with rt.session() as session:
        if cadence_name:
            _check_cadence(session, cadence_name)
        try:
            report = import_leads(session, file, now=now, default_region=rt.settings.leads.default_region,
                                  owner_email=owner_email, dry_run=dry_run, progress=sys.stderr.isatty(),
                                  actor=audit.cli_actor())
        except (CsvFormatError, LeadDataError) as exc:
            raise UserError(str(exc)) from None
        if not dry_run:
            audit.record(session, actor=audit.cli_actor(), action="leads.import", object_type="leads", at=now,
                         file=file.name, imported=report.imported, updated=report.updated,
                         rejected=len(report.rejected))
            if cadence_name and report.enrollable_ids:
                enrolled = _enroll(session, report.enrollable_ids, cadence_name, now,
                                   undone="nothing was imported or enrolled")
    for problem in report.rejected:
        click.echo(f"{problem.line}: {problem.message}")
    for problem in report.warnings:
        click.echo(f"{problem.line}: warning: {problem.message}")
    for problem in report.suppressed:
        click.echo(f"{problem.line}: suppressed, not enrollable: {problem.message}")
    summary = f"imported {report.imported}, updated {report.updated}, rejected {len(report.rejected)}"
    click.echo(summary + (" (dry run: nothing was written)" if dry_run else ""))
    if report.consents:
        click.echo(f"recorded {report.consents} consent(s); resumed {report.resumed} enrollment(s) that waited for one")
    if enrolled is not None:
        _print_enrolled(enrolled, cadence_name)
    elif cadence_name:
        click.echo(f"enrolled 0 lead(s) in {cadence_name}" + (" (dry run)" if dry_run else ""))
    # Exit after the session block: leaving it by an exception would roll the import back.
    if report.rejected:
        sys.exit(1)


@leads.command("list")
@format_option
@pass_state
def list_(state: CliState, fmt: str) -> None:
    """List leads: id, email, phone, name, company, country, time zone and its source, owner."""
    rt = state.runtime()
    with rt.session() as session:
        rows = [
            {"id": lead.id, "email": lead.email, "phone": lead.phone, "name": lead.full_name,
             "company": lead.company, "country": lead.country, "timezone": lead.timezone,
             "timezone_source": lead.timezone_source, "owner": owner}
            for lead, owner in session.execute(
                sa.select(Lead, User.email).outerjoin(User, Lead.owner_id == User.id).order_by(Lead.id))
        ]
    emit(rows, fmt, ["id", "email", "phone", "name", "company", "country", "timezone", "timezone_source", "owner"])


@click.command()
@click.option("--cadence", "cadence_name", required=True, metavar="NAME", help="Cadence to enroll into.")
@click.argument("refs", metavar="LEAD...", nargs=-1, required=True)
@pass_state
def enroll(state: CliState, cadence_name: str, refs: tuple[str, ...]) -> None:
    """Enroll leads (each an email, an E.164 phone or an id) into a cadence."""
    rt = state.runtime()
    now = rt.now()
    with rt.session() as session:
        _check_cadence(session, cadence_name)
        lead_ids = []
        for ref in refs:
            try:
                lead_ids.append(find_lead(session, ref).id)
            except LookupError as exc:
                raise UserError(f"{exc}; nobody was enrolled") from None
        report = _enroll(session, list(dict.fromkeys(lead_ids)), cadence_name, now, undone="nobody was enrolled")
    _print_enrolled(report, cadence_name)


def _check_cadence(session: so.Session, name: str) -> None:
    # Checked before anything is written, so a typo does not leave an import without its enrollments.
    if session.scalar(sa.select(Cadence.id).where(Cadence.name == name).limit(1)) is None:
        raise UserError(f"cadence '{name}' does not exist; `sequencer cadence list` shows the cadences")


def _enroll(session: so.Session, lead_ids: list[int], cadence_name: str, now: datetime, *,
            undone: str) -> EnrollReport:
    # Imported here, so that commands that never enroll do not load the enrollment rules.
    from sequencer.enrollments import enroll_leads

    try:
        report = enroll_leads(session, lead_ids=lead_ids, cadence_name=cadence_name, now=now)
    except (LookupError, ValueError) as exc:
        # The session rolls back with this error: say what that undid.
        raise UserError(f"{exc}; {undone}") from None
    audit.record(session, actor=audit.cli_actor(), action="enrollments.add", object_type="cadence",
                 object_id=cadence_name, at=now, enrollments=list(report.enrolled), skipped=len(report.skipped))
    return report


def _print_enrolled(report: EnrollReport, cadence_name: str) -> None:
    click.echo(f"enrolled {len(report.enrolled)} lead(s) in {cadence_name}")
    for lead_id, reason in report.skipped.items():
        click.echo(f"lead {lead_id}: skipped: {reason}")


@click.group()
def suppress() -> None:
    """Suppressions: emails, phones and domains that no cadence may contact."""


kind_option = click.option("--kind", type=click.Choice(suppressions.KINDS),
                           help="What VALUE is (default: contains @ -> email, starts with + or a digit -> phone, "
                                "else domain).")
channel_option = click.option("--channel", type=click.Choice(suppressions.CHANNELS), default="all",
                              show_default=True, help="Channel the suppression covers.")


@suppress.command("add")
@click.argument("value")
@kind_option
@click.option("--reason", default="", help="Why (shown wherever the lead is blocked).")
@channel_option
@pass_state
def suppress_add(state: CliState, value: str, kind: str | None, reason: str, channel: str) -> None:
    """Suppress an email, phone or domain."""
    rt = state.runtime()
    kind = kind or suppressions.detect_kind(value)
    region = rt.settings.leads.default_region
    with rt.session() as session:
        try:
            entry = suppressions.find(session, kind, value, channel, default_region=region)
            created = entry is None
            if created:
                entry = suppressions.add(session, kind, value, reason=reason, source="manual", now=rt.now(),
                                         channel=channel, default_region=region)
        except LeadDataError as exc:
            raise UserError(str(exc)) from None
        shown = entry.value or "(erased)"
        # Also when it already existed: enrollments started before this command may still be live.
        done = suppressions.enforce(session, [(kind, entry.value or "", channel)] if entry.value else [],
                                    reason=suppressions.describe(kind, entry.value, channel, entry.reason),
                                    now=rt.now(), plugins=rt.plugins)
        if created or done.enrollments_ended or done.tasks_closed:
            audit.record(session, actor=audit.cli_actor(), action="suppression.add", object_type="suppression",
                         object_id=entry.id, at=rt.now(), kind=kind, channel=channel, reason=reason,
                         enrollments_ended=done.enrollments_ended, tasks_closed=done.tasks_closed)
    click.echo(f"{'suppressed' if created else 'already suppressed'}: {kind} {shown} on {_scope(channel)}")
    _say_enforced(done)


@suppress.command("remove")
@click.argument("value")
@kind_option
@channel_option
@pass_state
def suppress_remove(state: CliState, value: str, kind: str | None, channel: str) -> None:
    """Lift the suppression of an email, phone or domain on one channel scope."""
    rt = state.runtime()
    kind = kind or suppressions.detect_kind(value)
    with rt.session() as session:
        try:
            removed = suppressions.remove(session, kind, value, channel,
                                          default_region=rt.settings.leads.default_region)
        except LeadDataError as exc:
            raise UserError(str(exc)) from None
        if not removed:
            raise UserError(f"{kind} {value} is not suppressed on {_scope(channel)}; "
                            f"`sequencer suppress list` shows what is")
        audit.record(session, actor=audit.cli_actor(), action="suppression.remove", object_type="suppression",
                     at=rt.now(), kind=kind, channel=channel)
    click.echo(f"no longer suppressed: {kind} {value} on {_scope(channel)}")


@suppress.command("list")
@format_option
@pass_state
def suppress_list(state: CliState, fmt: str) -> None:
    """List suppressions: kind, value (empty once erased), channel, reason, source, created."""
    rt = state.runtime()
    with rt.session() as session:
        rows = [{"id": s.id, "kind": s.kind, "value": s.value, "channel": s.channel, "reason": s.reason,
                 "source": s.source, "created_at": s.created_at} for s in suppressions.list_(session)]
    emit(rows, fmt, ["id", "kind", "value", "channel", "reason", "source", "created_at"])


@suppress.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@channel_option
@pass_state
def suppress_import(state: CliState, file: Path, channel: str) -> None:
    """Import suppressions from a CSV file (value or email/phone/domain, reason); print bad rows as LINE: reason.

    Exit status 1 if a row was rejected; the good rows are kept.
    """
    rt = state.runtime()
    with rt.session() as session:
        try:
            report = suppressions.import_csv(session, file, now=rt.now(), source="import",
                                             default_region=rt.settings.leads.default_region, channel=channel)
        except (CsvFormatError, LeadDataError) as exc:
            raise UserError(str(exc)) from None
        done = suppressions.enforce(session, report.entries, reason=f"listed in the suppression import {file.name}",
                                    now=rt.now(), plugins=rt.plugins)
        audit.record(session, actor=audit.cli_actor(), action="suppression.import", object_type="suppression",
                     at=rt.now(), file=file.name, added=report.added, rejected=len(report.rejected),
                     enrollments_ended=done.enrollments_ended, tasks_closed=done.tasks_closed)
    for problem in report.rejected:
        click.echo(str(problem))
    click.echo(f"added {report.added}, already suppressed {report.existing}, rejected {len(report.rejected)}")
    _say_enforced(done)
    if report.rejected:
        sys.exit(1)


def _say_enforced(done: suppressions.Enforcement) -> None:
    if done.enrollments_ended or done.tasks_closed:
        click.echo(f"ended {done.enrollments_ended} enrollment(s), closed {done.tasks_closed} open task(s)")


def _scope(channel: str) -> str:
    return "all channels" if channel == "all" else channel
