"""Consent to texts and automated calls: `sequencer consent`, the record on the lead, the audit log, resuming."""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from sequencer.consent import NO_CONSENT, ConsentError, add_consent, consents, has_consent, resume_waiting_for_consent
from sequencer.models import AuditEntry, Enrollment, Lead
from sequencer.testing.world import ALWAYS_OPEN, REP, apply, enroll_csv, team, utc

NOW = "2026-03-02T14:00:00Z"
CADENCE = 'name = "phone"\n' + ALWAYS_OPEN + """
[[steps]]
key = "text"
channel = "sms"
body = "Hi {{ lead.first_name }}, a quick question. Reply STOP to opt out."

[[steps]]
key = "call"
channel = "voice"
wait = "1d"
body = "Call {{ lead.first_name }}."
"""


@pytest.fixture
def enrolled(cli, tmp_path: Path) -> None:
    """Ann, Ben and Cy in the "phone" cadence; none of them has consent yet."""
    team(cli)
    apply(cli, tmp_path, CADENCE)
    enroll_csv(cli, tmp_path, [f"ann@corp.example,+12125550100,Ann,{REP}", f"ben@corp.example,+12125550101,Ben,{REP}",
                               f"cy@corp.example,+12125550102,Cy,{REP}"], "phone", NOW,
               header="email,phone,first_name,owner")


def listed(cli, lead: str) -> list[dict]:
    return json.loads(cli("consent", "list", lead, "--format", "json").output)


def pause(runtime, email: str, reason: str = NO_CONSENT, step_position: int = 0) -> None:
    """Put a lead's enrollment where the engine leaves it when a step lacks consent."""
    with runtime.session() as session:
        lead_id = session.scalar(sa.select(Lead.id).where(Lead.email_normalized == email))
        session.execute(sa.update(Enrollment).where(Enrollment.lead_id == lead_id).values(
            state="paused", paused_reason=reason, step_position=step_position, next_due_at=None))


def enrollment(runtime, email: str) -> Enrollment:
    with runtime.session() as session:
        return session.scalars(sa.select(Enrollment).join(Lead).where(Lead.email_normalized == email)).one()


def test_add_list_remove_and_the_audit_log(cli, runtime, enrolled, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQUENCER_ACTOR", "ops@acme.example")
    result = cli("consent", "add", "ann@corp.example", "--channel", "sms", "--source", " web form,  pricing page ",
                 "--at", "2026-02-20T10:00:00+01:00", now=NOW)
    assert result.output == ("sms consent recorded for lead 1 (ann@corp.example): 'web form, pricing page', "
                             "given 2026-02-20T09:00:00Z\n")
    cli("consent", "add", "+12125550100", "--channel", "voice", "--source", "recorded call", now=NOW)
    assert listed(cli, "1") == [
        {"channel": "sms", "state": "given", "source": "web form, pricing page", "given_at": "2026-02-20T09:00:00Z",
         "recorded_by": "ops@acme.example", "recorded_at": NOW, "revoked_by": None, "revoked_at": None},
        {"channel": "voice", "state": "given", "source": "recorded call", "given_at": NOW,
         "recorded_by": "ops@acme.example", "recorded_at": NOW, "revoked_by": None, "revoked_at": None},
    ]
    assert cli("consent", "remove", "ann@corp.example", "--channel", "sms", now="2026-03-03T08:00:00Z").output == (
        "sms consent removed for lead 1 (ann@corp.example)\n")
    sms = listed(cli, "ann@corp.example")[0]
    assert (sms["state"], sms["source"], sms["revoked_at"], sms["revoked_by"]) == (
        "revoked", "web form, pricing page", "2026-03-03T08:00:00Z", "ops@acme.example")
    with runtime.session() as session:
        lead = session.get(Lead, 1)
        assert (has_consent(lead, "sms"), has_consent(lead, "voice"), has_consent(lead, "email")) == (False, True, False)
        entries = session.scalars(sa.select(AuditEntry).where(AuditEntry.action.like("consent.%"))
                                  .order_by(AuditEntry.id)).all()
    assert [(e.action, e.actor, e.object_type, e.object_id, e.detail["channel"]) for e in entries] == [
        ("consent.add", "ops@acme.example", "lead", "1", "sms"),
        ("consent.add", "ops@acme.example", "lead", "1", "voice"),
        ("consent.remove", "ops@acme.example", "lead", "1", "sms"),
    ]
    assert entries[0].detail == {"channel": "sms", "source": "web form, pricing page",
                                 "given_at": "2026-02-20T09:00:00Z"}
    table = cli("consent", "list", "ann@corp.example").output.splitlines()
    assert table[0].split() == ["CHANNEL", "STATE", "SOURCE", "GIVEN_AT", "RECORDED_BY", "REVOKED_AT"]
    assert table[1].split()[:2] == ["sms", "revoked"] and table[2].split()[:2] == ["voice", "given"]


def test_a_revoked_consent_can_be_given_again(cli, enrolled) -> None:
    cli("consent", "add", "1", "--channel", "sms", "--source", "web form", now=NOW)
    cli("consent", "remove", "1", "--channel", "sms", now=NOW)
    cli("consent", "add", "1", "--channel", "sms", "--source", "texted START", now="2026-03-04T09:00:00Z")
    assert [(c["state"], c["source"], c["revoked_at"]) for c in listed(cli, "1")] == [
        ("given", "texted START", None)]


@pytest.mark.parametrize(("args", "status", "message"), [
    (["nobody@corp.example", "--channel", "sms", "--source", "form"], 1,
     "no lead with email nobody@corp.example; `sequencer leads list` shows the leads"),
    (["ann@corp.example", "--channel", "sms", "--source", "  "], 1,
     "consent to sms needs a source: say where it was given"),
    (["ann@corp.example", "--channel", "sms", "--source", "form", "--at", "2026-02-20 10:00"], 1,
     "--at: 2026-02-20T10:00:00 has no time zone; give it a Z or an offset"),
    (["ann@corp.example", "--channel", "sms", "--source", "form", "--at", "2026-03-05T00:00:00Z"], 1,
     "consent time 2026-03-05T00:00:00Z is in the future (now is 2026-03-02T14:00:00Z)"),
    (["ann@corp.example", "--channel", "email", "--source", "form"], 2, "'email' is not one of 'sms', 'voice'"),
])
def test_add_errors_name_the_problem_and_the_fix(cli, runtime, enrolled, args: list[str], status: int,
                                                 message: str) -> None:
    result = cli("consent", "add", *args, now=NOW, expect=status)
    assert message in result.output
    with runtime.session() as session:
        assert session.get(Lead, 1).consents == {}


def test_removing_a_consent_that_is_not_there_says_how_to_look(cli, enrolled) -> None:
    result = cli("consent", "remove", "ann@corp.example", "--channel", "voice", now=NOW, expect=1)
    assert "lead 1 has no voice consent to remove; `sequencer consent list 1` shows its consents" in result.output
    assert cli("consent", "list", "1").output == "(none)\n"


def test_consent_resumes_only_enrollments_waiting_for_it_at_a_step_on_that_channel(cli, runtime, enrolled) -> None:
    pause(runtime, "ann@corp.example")                          # waits at the text step
    pause(runtime, "ben@corp.example", step_position=1)         # waits at the call step
    pause(runtime, "cy@corp.example", reason="mailbox_held")    # waits for something else
    later = "2026-03-05T09:30:00Z"
    for email in ("ann@corp.example", "ben@corp.example", "cy@corp.example"):
        result = cli("consent", "add", email, "--channel", "sms", "--source", "web form", now=later)
        assert ("resumed 1 enrollment(s) that waited for it" in result.output) == (email == "ann@corp.example")
    ann, ben, cy = (enrollment(runtime, e) for e in ("ann@corp.example", "ben@corp.example", "cy@corp.example"))
    assert (ann.state, ann.paused_reason, ann.next_due_at) == ("active", None, utc(later))
    assert (ben.state, ben.paused_reason) == ("paused", NO_CONSENT)
    assert (cy.state, cy.paused_reason) == ("paused", "mailbox_held")
    assert "resumed 1 enrollment(s)" in cli("consent", "add", "ben@corp.example", "--channel", "voice", "--source",
                                            "recorded call", now=later).output
    assert enrollment(runtime, "ben@corp.example").state == "active"


def test_resume_is_set_based_over_many_leads(runtime, enrolled) -> None:
    for email in ("ann@corp.example", "ben@corp.example"):
        pause(runtime, email)
    with runtime.session() as session:
        # Ids of leads that do not exist are harmless, and a long list is split into statements.
        assert resume_waiting_for_consent(session, [1, 2, *range(1000, 2500)], "sms", runtime.now()) == 2
    assert enrollment(runtime, "ann@corp.example").state == "active"


def test_the_api_refuses_other_channels_and_reads_its_own_records(runtime, enrolled) -> None:
    now = runtime.now()
    with runtime.session() as session:
        lead = session.get(Lead, 1)
        with pytest.raises(ConsentError, match="channel 'email' takes no consent; use one of sms, voice"):
            add_consent(session, lead, "email", "form", now, now, "test")
        record = add_consent(session, lead, "sms", "form", now - timedelta(days=3), now, "test")
        assert consents(lead) == {"sms": record} and record.active
    with runtime.session() as session:
        assert consents(session.get(Lead, 1))["sms"] == record


def test_the_timeline_shows_consent_given_and_revoked(cli, enrolled, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQUENCER_ACTOR", "ops@acme.example")
    cli("consent", "add", "1", "--channel", "sms", "--source", "web form", "--at", "2026-02-01T00:00:00Z", now=NOW)
    cli("consent", "remove", "1", "--channel", "sms", now="2026-03-03T08:00:00Z")
    rows = [r for r in json.loads(cli("timeline", "1", "--format", "json").output) if r["kind"].startswith("consent")]
    assert [(r["at"], r["kind"], r["channel"], r["status"], r["detail"]) for r in rows] == [
        (NOW, "consent", "sms", "given", "web form (given 2026-02-01T00:00:00Z, recorded by ops@acme.example)"),
        ("2026-03-03T08:00:00Z", "consent_revoked", "sms", "revoked", "by ops@acme.example"),
    ]
