"""Opt-outs: signed never-expiring tokens, and opt_out() on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from itsdangerous import URLSafeSerializer

from sequencer import hookimpl, optouts
from sequencer.models import AuditEntry, Enrollment, InboundEvent, Lead, Suppression
from sequencer.suppressions import value_hash
from sequencer.testing.world import make_lead

SECRET = "test-secret-key"


def test_token_round_trip() -> None:
    token = optouts.unsubscribe_token(SECRET, 42)
    assert optouts.read_unsubscribe_token(SECRET, token) == 42


def test_token_signed_with_another_key_is_rejected() -> None:
    token = optouts.unsubscribe_token("someone-elses-key", 42)
    with pytest.raises(optouts.BadToken, match="not valid"):
        optouts.read_unsubscribe_token(SECRET, token)


@pytest.mark.parametrize("token", ["", "garbage", "NDI.bad-signature", "42"])
def test_garbled_token_is_rejected(token: str) -> None:
    with pytest.raises(optouts.BadToken):
        optouts.read_unsubscribe_token(SECRET, token)


def test_token_with_the_wrong_salt_is_rejected() -> None:
    # A token signed for another purpose (another salt) must not unsubscribe anyone.
    token = URLSafeSerializer(SECRET, salt="password-reset").dumps(42)
    with pytest.raises(optouts.BadToken):
        optouts.read_unsubscribe_token(SECRET, token)


@pytest.mark.parametrize("payload", ["42", True, -1, [42]])
def test_signed_non_lead_payload_is_rejected(payload: object) -> None:
    token = URLSafeSerializer(SECRET, salt="unsubscribe").dumps(payload)
    with pytest.raises(optouts.BadToken, match="does not name a lead"):
        optouts.read_unsubscribe_token(SECRET, token)


def test_bad_token_is_a_value_error() -> None:
    assert issubclass(optouts.BadToken, ValueError)


def test_unsubscribe_url_joins_base_url_and_token() -> None:
    url = optouts.unsubscribe_url("https://seq.example.com/", SECRET, 7)
    assert url == f"https://seq.example.com/u/{optouts.unsubscribe_token(SECRET, 7)}"
    assert optouts.read_unsubscribe_token(SECRET, url.rsplit("/", 1)[1]) == 7


def test_opt_out_suppresses_ends_enrollments_and_records(runtime) -> None:
    now = runtime.now()
    with runtime.session() as session:
        lead = make_lead(session, now, enroll_in=("Outbound Q2", "Webinar follow-up"))
        lead_id = lead.id
        assert optouts.opt_out(session, lead, now=now, source="unsubscribe_link", detail="confirm page") is True

    with runtime.session() as session:
        lead = session.get(Lead, lead_id)
        assert lead.opted_out_at == now
        rows = {(s.kind, s.value, s.channel, s.source) for s in session.scalars(sa.select(Suppression))}
        assert rows == {("email", "jane.doe@example.com", "all", "unsubscribe_link"),
                        ("phone", "+14155552671", "all", "unsubscribe_link")}
        hashes = {s.kind: s.value_hash for s in session.scalars(sa.select(Suppression))}
        assert hashes == {"email": value_hash("jane.doe@example.com"), "phone": value_hash("+14155552671")}
        enrollments = list(session.scalars(sa.select(Enrollment).where(Enrollment.lead_id == lead_id)))
        assert len(enrollments) == 2
        assert {(e.state, e.exited_at, e.next_due_at) for e in enrollments} == {("opted_out", now, None)}
        event = session.scalars(sa.select(InboundEvent)).one()
        assert (event.kind, event.channel, event.lead_id, event.received_at) == ("opt_out", "email", lead_id, now)
        assert event.classification == {"source": "unsubscribe_link"}
        entry = session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "lead.opt_out")).one()
        assert (entry.actor, entry.object_type, entry.object_id) == (f"lead:{lead_id}", "lead", str(lead_id))


def test_opt_out_is_idempotent(runtime) -> None:
    now = runtime.now()
    with runtime.session() as session:
        lead = make_lead(session, now)
        assert optouts.opt_out(session, lead, now=now, source="unsubscribe_link") is True
    runtime.clock.advance(timedelta(hours=1))
    with runtime.session() as session:
        lead = session.get(Lead, lead.id)
        assert optouts.opt_out(session, lead, now=runtime.now(), source="sms_stop", channel="sms") is False
    with runtime.session() as session:
        assert session.get(Lead, lead.id).opted_out_at == now  # the first opt-out's time is kept
        assert session.scalar(sa.select(sa.func.count()).select_from(InboundEvent)) == 1
        assert session.scalar(sa.select(sa.func.count()).select_from(Suppression)) == 2
        assert session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == 1


def test_opt_out_keeps_an_existing_suppression(runtime) -> None:
    now = runtime.now()
    with runtime.session() as session:
        lead = make_lead(session, now, phone=None)
        session.add(Suppression(kind="email", value="jane.doe@example.com",
                                value_hash=value_hash("jane.doe@example.com"), channel="all",
                                reason="imported", source="csv", created_at=now))
        session.flush()
        assert optouts.opt_out(session, lead, now=now, source="unsubscribe_link") is True
    with runtime.session() as session:
        assert [(s.kind, s.source) for s in session.scalars(sa.select(Suppression))] == [("email", "csv")]


def test_opt_out_of_a_lead_whose_stored_email_no_longer_validates_still_suppresses(runtime) -> None:
    now = runtime.now()
    with runtime.session() as session:
        lead = make_lead(session, now, email="Old..Style@Example.com", phone=None)
        assert optouts.opt_out(session, lead, now=now, source="unsubscribe_link") is True
    with runtime.session() as session:
        entry = session.scalars(sa.select(Suppression)).one()
        assert (entry.kind, entry.value, entry.value_hash) == (
            "email", "old..style@example.com", value_hash("old..style@example.com"))


def test_opt_out_calls_plugin_hooks(runtime) -> None:
    calls: list[tuple[str, object]] = []

    class Recorder:
        @hookimpl
        def inbound_received(self, event):  # noqa: ANN001
            calls.append(("inbound_received", event.kind))

        @hookimpl
        def enrollment_exited(self, enrollment, reason):  # noqa: ANN001
            calls.append(("enrollment_exited", enrollment.state))

    runtime.plugins.pm.register(Recorder(), name="test-recorder")
    try:
        with runtime.session() as session:
            lead = make_lead(session, runtime.now())
            optouts.opt_out(session, lead, now=runtime.now(), source="unsubscribe_link", plugins=runtime.plugins)
    finally:
        runtime.plugins.pm.unregister(name="test-recorder")
    assert ("inbound_received", "opt_out") in calls
    assert any(name == "enrollment_exited" and str(getattr(state, "value", state)) == "opted_out"
               for name, state in calls)
