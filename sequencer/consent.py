"""Consent to texts and automated calls (../shared/COMPLIANCE.md rule 9), kept on the lead.

`Lead.consents` holds one record per channel: where the consent came from (the source
text), when it was given, and who recorded it and when. Removing a consent keeps the
record, marked revoked, so the lead's timeline still shows what was given and when it
ended; the audit log keeps every change.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer import audit
from sequencer.clock import as_utc, iso_z
from sequencer.models import Enrollment, EnrollmentState, Lead, Step

# The channels whose touches need consent: SMS, and calls the engine places itself.
CHANNELS = ("sms", "voice")

# Enrollment.paused_reason of an enrollment whose step waits for consent.
NO_CONSENT = "no_consent"

# Lead ids per UPDATE, far below SQLite's bound-variable limit.
_IDS_PER_STATEMENT = 500


class ConsentError(ValueError):
    """A consent cannot be recorded; the message names the value and the fix."""


@dataclass(frozen=True)
class Consent:
    """One lead's consent on one channel."""

    channel: str
    source: str
    given_at: datetime
    recorded_by: str
    recorded_at: datetime
    revoked_by: str | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_json(self) -> dict[str, Any]:
        """Return the record as stored in Lead.consents[channel]."""
        return {"source": self.source, "given_at": iso_z(self.given_at), "recorded_by": self.recorded_by,
                "recorded_at": iso_z(self.recorded_at), "revoked_by": self.revoked_by,
                "revoked_at": iso_z(self.revoked_at)}

    @classmethod
    def from_json(cls, channel: str, data: dict[str, Any]) -> Consent:
        """Read a record of Lead.consents."""
        revoked_at = data.get("revoked_at")
        return cls(channel=channel, source=data["source"], given_at=datetime.fromisoformat(data["given_at"]),
                   recorded_by=data["recorded_by"], recorded_at=datetime.fromisoformat(data["recorded_at"]),
                   revoked_by=data.get("revoked_by"),
                   revoked_at=datetime.fromisoformat(revoked_at) if revoked_at else None)


def consents(lead: Lead) -> dict[str, Consent]:
    """Return the lead's consent records by channel, revoked ones included."""
    return {channel: Consent.from_json(channel, data) for channel, data in sorted((lead.consents or {}).items())}


def has_consent(lead: Lead, channel: str) -> bool:
    """Tell whether the lead has an active consent on `channel`."""
    data = (lead.consents or {}).get(channel)
    return bool(data) and not data.get("revoked_at")


def check_channel(channel: str) -> str:
    """Return `channel` if consent applies to it, else raise ConsentError naming the choices."""
    if channel not in CHANNELS:
        raise ConsentError(f"channel '{channel}' takes no consent; use one of {', '.join(CHANNELS)}")
    return channel


def add_consent(session: so.Session, lead: Lead, channel: str, source: str, at: datetime, now: datetime,
                actor: str) -> Consent:
    """Record that the lead consented on `channel` at `at`, as `source` says; audit it.

    Replaces an earlier record of that channel, revoked or not. Enrollments waiting for
    this consent resume only through resume_waiting_for_consent, which callers run after
    (once per batch when they record many).
    """
    check_channel(channel)
    source = " ".join((source or "").split())
    if not source:
        raise ConsentError(f"consent to {channel} needs a source: say where it was given (a form, a call, a "
                           f"signed document), e.g. --source 'web form, pricing page'")
    at, now = as_utc(at), as_utc(now)
    if at > now:
        raise ConsentError(f"consent time {iso_z(at)} is in the future (now is {iso_z(now)}); "
                           f"give the time it was given")
    consent = Consent(channel=channel, source=source, given_at=at, recorded_by=actor, recorded_at=now)
    # Reassigned, not mutated: the JSON column does not track in-place changes.
    lead.consents = {**(lead.consents or {}), channel: consent.to_json()}
    audit.record(session, actor=actor, action="consent.add", object_type="lead", object_id=lead.id, at=now,
                 channel=channel, source=source, given_at=iso_z(at))
    return consent


def remove_consent(session: so.Session, lead: Lead, channel: str, now: datetime, actor: str) -> Consent:
    """Revoke the lead's consent on `channel`; audit it. Raise LookupError when there is none to revoke."""
    check_channel(channel)
    if not has_consent(lead, channel):
        raise LookupError(f"lead {lead.id} has no {channel} consent to remove; "
                          f"`sequencer consent list {lead.id}` shows its consents")
    current = consents(lead)[channel]
    revoked = Consent(channel=channel, source=current.source, given_at=current.given_at,
                      recorded_by=current.recorded_by, recorded_at=current.recorded_at,
                      revoked_by=actor, revoked_at=as_utc(now))
    lead.consents = {**lead.consents, channel: revoked.to_json()}
    audit.record(session, actor=actor, action="consent.remove", object_type="lead", object_id=lead.id, at=now,
                 channel=channel, source=current.source)
    return revoked


def resume_waiting_for_consent(session: so.Session, lead_ids: Iterable[int], channel: str, now: datetime) -> int:
    """Make enrollments that wait for consent on `channel` due now; return how many.

    `lead_ids` are leads that now have consent on `channel`; an enrollment of theirs
    resumes when it is paused as no_consent and its current step is on that channel
    (one waiting at a voice step stays paused when only SMS consent arrives).
    """
    check_channel(channel)
    ids = sorted(set(lead_ids))
    current_step_here = sa.select(Step.id).where(Step.cadence_id == Enrollment.cadence_id,
                                                 Step.position == Enrollment.step_position,
                                                 Step.channel == channel).exists()
    resumed = 0
    for i in range(0, len(ids), _IDS_PER_STATEMENT):
        result = session.execute(
            sa.update(Enrollment)
            .where(Enrollment.lead_id.in_(ids[i:i + _IDS_PER_STATEMENT]),
                   Enrollment.state == EnrollmentState.paused, Enrollment.paused_reason == NO_CONSENT,
                   current_step_here)
            .values(state=EnrollmentState.active, paused_reason=None, next_due_at=now)
            .execution_options(synchronize_session=False)
        )
        resumed += result.rowcount
    return resumed
