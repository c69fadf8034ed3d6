"""SMS through the whole product: `worker --once` at a given instant, the real Twilio SDK against the fake.

Each test drives the CLI as an operator would (users, numbers, leads, consent, cadences, the
worker) and reads what reached the SMTP sink, the fake Twilio and the database.
"""
from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from sequencer.models import Enrollment, Lead, Suppression, Task, Touch
from sequencer.testing.world import ALWAYS_OPEN, apply, team
from sms_support import BASE_URL, POOL

REP = "rita@acme.example"
PHONE = "+12125550102"  # New York: contact hours are kept in America/New_York
MONDAY = "2026-03-02T15:00:00Z"  # 10:00 in New York


def leads(cli, tmp_path: Path, *rows: str, owner: str = REP) -> None:
    """Import leads given as `email,phone,first_name` rows, owned by `owner`."""
    path = tmp_path / "leads.csv"
    path.write_text("email,phone,first_name,owner\n" + "".join(f"{row},{owner}\n" for row in rows), encoding="utf-8")
    cli("leads", "import", str(path), now="2026-03-01T12:00:00Z")


def consent(cli, phone: str = PHONE, now: str = "2026-03-01T12:00:00Z") -> None:
    cli("consent", "add", phone, "--channel", "sms", "--source", "web form, pricing page", now=now)


def cadence(name: str, *steps: str) -> str:
    return f'name = "{name}"\n' + ALWAYS_OPEN + "".join(f"\n[[steps]]\n{step}" for step in steps)


SMS = 'key = "{key}"\nchannel = "sms"\nwait = "{wait}"\nbody = "{body}"\n'


def sms(key: str = "text", wait: str = "0d", body: str = "Hi {{ lead.first_name }}, quick question?") -> str:
    return SMS.format(key=key, wait=wait, body=body)


def touch(runtime, step: str) -> Touch:
    with runtime.session() as session:
        return session.scalar(sa.select(Touch).where(Touch.step_key == step))


def enrollment(runtime) -> Enrollment:
    with runtime.session() as session:
        return session.scalar(sa.select(Enrollment))


def test_email_then_sms_then_a_call_task_for_one_lead(cli, runtime, tmp_path: Path, smtp_sink, fake_twilio) -> None:
    team(cli, REP, name="Rita Rep", timezone="America/New_York")
    leads(cli, tmp_path, f"ann@beta.example,{PHONE},Ann")
    consent(cli)
    apply(cli, tmp_path, cadence(
        "mixed",
        'key = "intro"\nchannel = "email"\nsubject = "Hello {{ lead.first_name }}"\nbody = "Hi {{ lead.first_name }}."\n',
        sms("nudge", "1d"),
        'key = "call"\nchannel = "voice"\naction = "manual"\nwait = "1d"\nbody = "Call {{ lead.first_name }}."\n'))
    cli("enroll", "--cadence", "mixed", PHONE, now=MONDAY)

    cli("worker", "--once", now=MONDAY)
    [mail] = smtp_sink.messages()
    assert mail["Subject"] == "Hello Ann" and mail["To"] == "Ann <ann@beta.example>"
    assert fake_twilio.sent() == []

    cli("worker", "--once", now="2026-03-03T15:00:00Z")
    [text] = fake_twilio.sent()
    # Rita has no number of her own: the pool's first, with the status callback at [web] base_url.
    assert (text.form["To"], text.form["From"], text.form["Body"]) == (PHONE, POOL[0], "Hi Ann, quick question?")
    assert text.form["StatusCallback"] == f"{BASE_URL}/hooks/sms/status"
    sent = touch(runtime, "nudge")
    assert (sent.status, sent.provider_id) == ("sent", text.sid)
    assert len(smtp_sink.messages()) == 1

    cli("worker", "--once", now="2026-03-04T15:00:00Z")
    with runtime.session() as session:
        [task] = session.scalars(sa.select(Task)).all()
    assert (task.kind, task.state, task.title, task.instructions) == ("call", "open", "Call Ann", "Call Ann.")
    assert enrollment(runtime).state == "waiting_task" and len(fake_twilio.sent()) == 1


def test_a_manual_sms_step_opens_a_task_with_the_rendered_text(cli, runtime, tmp_path: Path, fake_twilio) -> None:
    team(cli, REP, name="Rita Rep", timezone="America/New_York")
    leads(cli, tmp_path, f"ann@beta.example,{PHONE},Ann")
    consent(cli)
    apply(cli, tmp_path, cadence("by_hand", sms("text").replace('channel = "sms"', 'channel = "sms"\naction = "manual"')))
    cli("enroll", "--cadence", "by_hand", PHONE, now=MONDAY)
    cli("worker", "--once", now=MONDAY)
    with runtime.session() as session:
        [task] = session.scalars(sa.select(Task)).all()
    assert (task.kind, task.title, task.instructions) == ("sms", "Text Ann", "Hi Ann, quick question?")
    assert fake_twilio.sent() == []


def test_an_sms_only_cadence_works_for_a_rep_without_a_mailbox_and_keeps_the_lead_on_one_number(
        cli, runtime, tmp_path: Path, fake_twilio) -> None:
    cli("users", "add", REP, "--role", "rep", "--name", "Rita Rep", "--timezone", "America/New_York")
    leads(cli, tmp_path, f",{PHONE},Ann")
    consent(cli)
    apply(cli, tmp_path, cadence("texts", sms("first"), sms("second", "1d", "Still there, {{ lead.first_name }}?")))
    cli("enroll", "--cadence", "texts", PHONE, now=MONDAY)
    cli("worker", "--once", now=MONDAY)
    # Rita gets a number of her own after the first text: Ann keeps hearing from the pool's.
    cli("numbers", "assign", "+14155550199", "--owner", REP)
    leads(cli, tmp_path, f",+12125550103,Bo")
    consent(cli, "+12125550103")
    cli("enroll", "--cadence", "texts", "+12125550103", now="2026-03-03T15:00:00Z")
    cli("worker", "--once", now="2026-03-03T15:00:00Z")

    sent = [(r.form["To"], r.form["From"], r.form["Body"]) for r in fake_twilio.sent()]
    assert sent[0] == (PHONE, POOL[0], "Hi Ann, quick question?")
    assert sorted(sent[1:]) == [(PHONE, POOL[0], "Still there, Ann?"),
                                ("+12125550103", "+14155550199", "Hi Bo, quick question?")]
    with runtime.session() as session:
        assert session.scalar(sa.select(Enrollment.mailbox_id)) is None


def test_contact_hours_across_the_dst_change(cli, runtime, tmp_path: Path, fake_twilio) -> None:
    team(cli, REP, name="Rita Rep", timezone="America/New_York")
    leads(cli, tmp_path, f",{PHONE},Ann")
    consent(cli)
    apply(cli, tmp_path, cadence("texts", sms()))
    # Saturday 7 March 2026, 21:00 EST: contact hours (08:00-21:00 local) have just closed. New York
    # springs forward that night, so 08:00 on Sunday is EDT, 12:00Z rather than 13:00Z.
    cli("enroll", "--cadence", "texts", PHONE, now="2026-03-08T02:00:00Z")
    cli("worker", "--once", now="2026-03-08T02:00:00Z")
    assert fake_twilio.sent() == []
    e = enrollment(runtime)
    assert e.next_due_at.replace(tzinfo=None).isoformat() == "2026-03-08T12:00:00"
    cli("worker", "--once", now="2026-03-08T11:59:59Z")
    assert fake_twilio.sent() == []
    cli("worker", "--once", now="2026-03-08T12:00:00Z")
    assert [r.form["To"] for r in fake_twilio.sent()] == [PHONE]
    assert touch(runtime, "text").status == "sent"


def test_no_consent_no_provider_call_then_consent_sends(cli, runtime, tmp_path: Path, fake_twilio) -> None:
    team(cli, REP, name="Rita Rep", timezone="America/New_York")
    leads(cli, tmp_path, f",{PHONE},Ann")
    apply(cli, tmp_path, cadence("texts", sms()))
    cli("enroll", "--cadence", "texts", PHONE, now=MONDAY)
    cli("worker", "--once", now=MONDAY)
    assert fake_twilio.requests == []
    e = enrollment(runtime)
    assert (e.state, e.paused_reason) == ("paused", "no_consent")
    # The timeline says why nothing went out.
    [enrolled] = json.loads(cli("timeline", PHONE, "--format", "json").output)
    assert enrolled["detail"] == "cadence texts - paused: no_consent"

    consent(cli, now="2026-03-02T16:00:00Z")
    cli("worker", "--once", now="2026-03-02T16:00:00Z")
    [sent] = fake_twilio.sent()
    assert sent.form["To"] == PHONE
    assert touch(runtime, "text").status == "sent"
    # A text has no subject: its first words and its SID say which one went.
    [row] = [r for r in json.loads(cli("timeline", PHONE, "--format", "json").output) if r["kind"] == "touch"]
    assert (row["status"], row["detail"], row["provider_id"]) == ("sent", "Hi Ann, quick question?", sent.sid)


def test_21610_is_never_retried_and_suppresses_the_number_on_every_channel(
        cli, runtime, tmp_path: Path, fake_twilio) -> None:
    team(cli, REP, name="Rita Rep", timezone="America/New_York")
    leads(cli, tmp_path, f"ann@beta.example,{PHONE},Ann")
    consent(cli)
    apply(cli, tmp_path, cadence("texts", sms()))
    fake_twilio.fail(PHONE, 21610)
    cli("enroll", "--cadence", "texts", PHONE, now=MONDAY)
    cli("worker", "--once", now=MONDAY)
    # Later passes, well past any retry delay, ask Twilio nothing more.
    for later in ("2026-03-02T16:00:00Z", "2026-03-03T15:00:00Z", "2026-03-09T15:00:00Z"):
        cli("worker", "--once", now=later)
    assert len(fake_twilio.requests) == 1
    with runtime.session() as session:
        suppressions = session.execute(sa.select(Suppression.kind, Suppression.value, Suppression.channel)).all()
        lead = session.scalar(sa.select(Lead))
        failed = session.scalar(sa.select(Touch))
    # The number on every channel, and (rule 11) the lead opted out: their email address too.
    assert sorted(suppressions) == [("email", "ann@beta.example", "all"), ("phone", PHONE, "all")]
    assert lead.opted_out_at is not None
    assert failed.status != "sent" and "21610" in (failed.error or "")
    assert enrollment(runtime).state not in ("active", "paused")


def test_a_wrong_number_on_a_call_stops_the_later_texts_and_calls(cli, runtime, tmp_path: Path, fake_twilio) -> None:
    team(cli, REP, name="Rita Rep", timezone="America/New_York")
    leads(cli, tmp_path, f"ann@beta.example,{PHONE},Ann")
    consent(cli)
    call = 'key = "{key}"\nchannel = "voice"\naction = "manual"\nwait = "{wait}"\nbody = "Call {{{{ lead.first_name }}}}."\n'
    apply(cli, tmp_path, cadence("calls", call.format(key="call1", wait="0d"), sms("nudge", "1d"),
                                 call.format(key="call2", wait="1d"),
                                 'key = "mail"\nchannel = "email"\nwait = "1d"\nsubject = "Hi"\nbody = "Hello."\n'))
    cli("enroll", "--cadence", "calls", PHONE, now=MONDAY)
    cli("worker", "--once", now=MONDAY)
    with runtime.session() as session:
        [task] = session.scalars(sa.select(Task)).all()
    cli("task", "done", str(task.id), "--outcome", "wrong_number", now=MONDAY)

    for day in ("2026-03-03", "2026-03-04", "2026-03-05", "2026-03-06"):
        cli("worker", "--once", now=f"{day}T15:00:00Z")
    assert fake_twilio.sent() == []  # no text to the wrong number
    with runtime.session() as session:
        assert session.scalar(sa.select(Lead.phone_wrong))
        assert session.scalar(sa.select(sa.func.count()).select_from(Task)) == 1  # no second call task
        statuses = dict(session.execute(sa.select(Touch.step_key, Touch.status)).all())
    assert statuses["nudge"] == "skipped" and statuses["call2"] == "skipped"
    # The email address is still good: the cadence goes on by email.
    assert statuses["mail"] == "sent"


def test_a_rep_sends_a_manual_sms_task_edited_through_the_sms_channel(cli, runtime, tmp_path: Path,
                                                                        fake_twilio) -> None:
    from sequencer import manual
    from sequencer.models import User

    team(cli, REP, name="Rita Rep", timezone="America/New_York")
    leads(cli, tmp_path, f"ann@beta.example,{PHONE},Ann")
    consent(cli)
    apply(cli, tmp_path, cadence("by_hand", sms("text").replace('channel = "sms"', 'channel = "sms"\naction = "manual"'),
                                 sms("later", "1d", "Following up, {{ lead.first_name }}.")))
    cli("enroll", "--cadence", "by_hand", PHONE, now=MONDAY)
    cli("worker", "--once", now=MONDAY)
    with runtime.session() as session:
        [task] = session.scalars(sa.select(Task)).all()
        rep_id = session.scalar(sa.select(User.id).where(User.email == REP))

    result = manual.send(runtime, task.id, subject=None, body="Hi Ann, this is Rita. Free for 5 min today?",
                         user_id=rep_id)
    [text] = fake_twilio.sent()
    assert result.accepted and (text.form["To"], text.form["From"]) == (PHONE, POOL[0])
    assert text.form["Body"] == "Hi Ann, this is Rita. Free for 5 min today?"
    sent = touch(runtime, "text")
    assert (sent.status, sent.provider_id) == ("sent", text.sid)
    with runtime.session() as session:
        assert session.get(Task, task.id).state == "done"
    # The cadence goes on from the rep's send, from the same number.
    cli("worker", "--once", now="2026-03-03T15:00:00Z")
    assert [(r.form["From"], r.form["Body"]) for r in fake_twilio.sent()][1] == (POOL[0], "Following up, Ann.")
