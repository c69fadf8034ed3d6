"""`sequencer consent add|remove|list`: a lead's consent to texts and automated calls."""
from __future__ import annotations

import click
import sqlalchemy.orm as so

from sequencer import audit
from sequencer.cli.base import CliState, UserError, emit, format_option, pass_state
from sequencer.clock import iso_z, parse_instant
from sequencer.consent import CHANNELS, ConsentError, add_consent, consents, remove_consent, resume_waiting_for_consent
from sequencer.leads import find_lead
from sequencer.models import Lead

lead_argument = click.argument("lead_ref", metavar="LEAD")
channel_option = click.option("--channel", required=True, type=click.Choice(CHANNELS),
                              help="sms: text messages; voice: calls the engine places itself.")


def register(main: click.Group) -> None:
    main.add_command(consent)


@click.group()
def consent() -> None:
    """Consent: what SMS steps and automatic calls need before they reach a lead."""


@consent.command("add")
@lead_argument
@channel_option
@click.option("--source", required=True, help="Where the consent was given, e.g. 'web form, pricing page'.")
@click.option("--at", "at_text", metavar="ISO8601", help="When it was given (Z or an offset; default: now).")
@pass_state
def consent_add(state: CliState, lead_ref: str, channel: str, source: str, at_text: str | None) -> None:
    """Record a lead's consent on a channel.

    LEAD is an email, an E.164 phone or an id. Enrollments that waited for this consent resume.
    """
    rt = state.runtime()
    now = rt.now()
    try:
        at = parse_instant(at_text) if at_text else now
    except ValueError as exc:
        raise UserError(f"--at: {exc}") from None
    with rt.session() as session:
        lead = _lead(session, lead_ref)
        try:
            record = add_consent(session, lead, channel, source, at, now, audit.cli_actor())
        except ConsentError as exc:
            raise UserError(str(exc)) from None
        resumed = resume_waiting_for_consent(session, [lead.id], channel, now)
        name = _name(lead)
    click.echo(f"{channel} consent recorded for {name}: {record.source!r}, given {iso_z(record.given_at)}")
    if resumed:
        click.echo(f"resumed {resumed} enrollment(s) that waited for it")


@consent.command("remove")
@lead_argument
@channel_option
@pass_state
def consent_remove(state: CliState, lead_ref: str, channel: str) -> None:
    """Revoke a lead's consent on a channel.

    LEAD is an email, an E.164 phone or an id. The lead's steps on that channel wait again.
    """
    rt = state.runtime()
    with rt.session() as session:
        lead = _lead(session, lead_ref)
        try:
            remove_consent(session, lead, channel, rt.now(), audit.cli_actor())
        except LookupError as exc:
            raise UserError(str(exc)) from None
        name = _name(lead)
    click.echo(f"{channel} consent removed for {name}")


@consent.command("list")
@lead_argument
@format_option
@pass_state
def consent_list(state: CliState, lead_ref: str, fmt: str) -> None:
    """List a lead's consents, revoked ones included.

    LEAD is an email, an E.164 phone or an id.
    """
    rt = state.runtime()
    with rt.session() as session:
        lead = _lead(session, lead_ref)
        rows = [{"channel": c.channel, "state": "given" if c.active else "revoked", "source": c.source,
                 "given_at": c.given_at, "recorded_by": c.recorded_by, "recorded_at": c.recorded_at,
                 "revoked_by": c.revoked_by, "revoked_at": c.revoked_at} for c in consents(lead).values()]
    emit(rows, fmt, ["channel", "state", "source", "given_at", "recorded_by", "revoked_at"])


def _lead(session: so.Session, ref: str) -> Lead:
    try:
        return find_lead(session, ref)
    except LookupError as exc:
        raise UserError(f"{exc}; `sequencer leads list` shows the leads") from None


def _name(lead: Lead) -> str:
    return f"lead {lead.id}" + (f" ({lead.email or lead.phone})" if lead.email or lead.phone else "")
