"""send_batch through the real twilio SDK against the fake Twilio: accepted, each refusal's SendResult, senders."""
from __future__ import annotations

import asyncio
import socket
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from sequencer import senders
from sequencer.models import LeadNumber, PhoneNumber, Touch
from sequencer.numbers import ensure
from sequencer.testing.twilio import HANG_UP
from sequencer.testing.world import team
from sequencer_sms import channel as channel_module
from sequencer_sms.channel import SmsChannel, _AsyncHttpClient
from sms_support import BASE_URL, LEAD, POOL, outbound, sending_touch


@pytest.fixture
def sms(runtime) -> SmsChannel:
    channel = runtime.plugins.channel("sms")
    assert isinstance(channel, SmsChannel), "the sms plugin is installed (make install) and replaces the built-in"
    return channel


def test_declarations_and_settings(sms, runtime) -> None:
    assert (sms.address_kind, sms.requires_consent, sms.contact_hours, sms.sender_kind, sms.task_kind,
            sms.task_verb) == ("phone", "all", True, "number", "sms", "Text")
    assert sms.unavailable_reason() is None
    with runtime.session() as session:
        assert runtime.plugins.channel_status(session)["sms"] is None


def test_health_fetches_the_account_and_names_what_is_wrong(sms, fake_twilio, cli) -> None:
    health = sms.health()
    assert health.ok and health.detail == "ok (Twilio account 'Fake Twilio account', 2 numbers)"
    assert fake_twilio.requests == []  # nothing was sent
    doctor = cli("doctor", expect=None).output
    assert "ok    sms channel     ok (Twilio account 'Fake Twilio account', 2 numbers)" in doctor
    fake_twilio.auth_token = "not-the-configured-one"
    health = sms.health()
    assert not health.ok and health.detail == ("Twilio refused the account (HTTP 401): check [plugins.sms] "
                                               "account_sid and auth_token")
    assert "FAIL  sms channel     Twilio refused the account" in cli("doctor", expect=1).output
    fake_twilio.__exit__()
    try:
        health = sms.health()
    finally:
        fake_twilio.__enter__()
    assert not health.ok and health.detail.startswith("cannot reach http://127.0.0.1:")


def test_accepted_with_status_callback_and_sid(sms, runtime, fake_twilio) -> None:
    touch_id = sending_touch(runtime, LEAD)
    [result] = sms.send_batch([outbound(touch_id)])
    [sent] = fake_twilio.sent()
    assert result.accepted and result.provider_id == sent.sid and result.provider_id.startswith("SM")
    assert result.provider_status == "queued"
    assert sent.form == {"To": LEAD, "From": POOL[0], "Body": "Hi Jane",
                         "StatusCallback": f"{BASE_URL}/hooks/sms/status"}


@pytest.mark.parametrize("code, problem", [(21610, "opted_out"), (21211, "invalid_address"), (21614, "unable_sms")])
def test_recipient_errors(sms, runtime, fake_twilio, code: int, problem: str) -> None:
    fake_twilio.fail(LEAD, code)
    [result] = sms.send_batch([outbound(sending_touch(runtime, LEAD))])
    assert not result.accepted and not result.retryable and result.defer_until is None
    assert result.recipient_problem == problem and f"Twilio error {code} (HTTP 400)" in result.error


@pytest.mark.parametrize("code, retry_after, wait", [(20429, "30", 30), (20429, None, 60), (20500, None, 60),
                                                     (20429, "Mon, 02 Mar 2026 14:02:00 GMT", 120)])
def test_slow_down_and_outages_defer_without_an_attempt(sms, runtime, fake_twilio, code, retry_after, wait) -> None:
    fake_twilio.fail(LEAD, code, retry_after)
    [result] = sms.send_batch([outbound(sending_touch(runtime, LEAD))])
    assert not result.accepted and not result.retryable and result.recipient_problem is None
    assert result.defer_until == runtime.now() + timedelta(seconds=wait)


def test_other_refusal_fails_the_touch_with_the_code(sms, runtime, fake_twilio) -> None:
    fake_twilio.fail(LEAD, 21617)
    [result] = sms.send_batch([outbound(sending_touch(runtime, LEAD))])
    assert not result.accepted and not result.retryable and result.defer_until is None
    assert result.provider_status == "error 21617" and "Twilio error 21617" in result.error


def test_wrong_credentials_blame_our_side(sms, runtime, fake_twilio) -> None:
    fake_twilio.auth_token = "not-the-configured-one"
    [result] = sms.send_batch([outbound(sending_touch(runtime, LEAD))])
    assert result.retryable and "account_sid and auth_token" in result.sender_problem


def test_nothing_listening_is_retryable(sms, runtime, fake_twilio) -> None:
    touch_id = sending_touch(runtime, LEAD)
    fake_twilio.__exit__()  # the port is closed: the request never left
    [result] = sms.send_batch([outbound(touch_id)])
    fake_twilio.__enter__()
    assert result.retryable and not result.accepted and "cannot reach" in result.error


def test_no_answer_after_sending_is_unknown_not_retried(sms, runtime, fake_twilio) -> None:
    """Twilio took the request but its answer never came: the text may be out, so nobody resends it blindly."""
    fake_twilio.fail(LEAD, HANG_UP)
    [result] = sms.send_batch([outbound(sending_touch(runtime, LEAD))])
    assert [r.form["To"] for r in fake_twilio.requests] == [LEAD]
    assert not result.accepted and not result.retryable and result.defer_until is None
    assert result.provider_status == "unknown" and "no answer from" in result.error


def test_a_silent_api_times_out_as_unknown(sms, runtime, monkeypatch) -> None:
    """Connected and sent, then no answer: HTTP_TIMEOUT ends the wait, and the text may be out."""
    with socket.socket() as silent:  # the kernel accepts the connection; nobody ever reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setitem(sms.context.settings, "api_base_url", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setattr(channel_module, "HTTP_TIMEOUT", 0.5)
        started = time.monotonic()
        [result] = sms.send_batch([outbound(sending_touch(runtime, LEAD))])
    assert time.monotonic() - started < 10
    assert not result.accepted and not result.retryable and result.provider_status == "unknown"
    assert "no answer from" in result.error


def test_an_unexpected_error_on_one_text_keeps_the_others_answers(sms, runtime, fake_twilio, monkeypatch) -> None:
    other = "+14155552673"
    send = SmsChannel._send

    async def broken_for_lead(self, client, settings, touch, message):  # noqa: ANN001
        if touch.to_phone == LEAD:
            raise RuntimeError("a bug")
        return await send(self, client, settings, touch, message)

    monkeypatch.setattr(SmsChannel, "_send", broken_for_lead)
    broken, fine = sms.send_batch([outbound(sending_touch(runtime, LEAD)),
                                   outbound(sending_touch(runtime, other), other)])
    assert fine.accepted and [s.form["To"] for s in fake_twilio.sent()] == [other]
    assert not broken.accepted and not broken.retryable and broken.provider_status == "unknown"
    assert "RuntimeError('a bug')" in broken.error


def test_sticky_sender_owner_number_then_pool(sms, runtime, fake_twilio, cli) -> None:
    team(cli)
    cli("numbers", "assign", "+14155550199", "--owner", "rep@acme.example")
    owned = sending_touch(runtime, "+14155552672", owner="rep@acme.example")
    first, second = sending_touch(runtime, LEAD), sending_touch(runtime, "+14155552673")
    sms.send_batch([outbound(owned, "+14155552672"), outbound(first), outbound(second, "+14155552673")])
    # The rep's own number for the rep's lead; the pool's least used for the others (texts of a
    # group go out concurrently, so the fake sees them in any order).
    assert {s.form["To"]: s.form["From"] for s in fake_twilio.sent()} == {
        "+14155552672": "+14155550199", LEAD: POOL[0], "+14155552673": POOL[1]}
    # The rep gives the number back; the lead keeps hearing from it, and from nothing else.
    cli("numbers", "unassign", "+14155550199")
    again = sending_touch(runtime, "+14155552672")
    sms.send_batch([outbound(again, "+14155552672"), outbound(sending_touch(runtime, LEAD))])
    assert {s.form["To"]: s.form["From"] for s in fake_twilio.sent()[3:]} == {"+14155552672": "+14155550199",
                                                                             LEAD: POOL[0]}
    with runtime.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(LeadNumber)) == 3


def test_busy_number_defers_the_backlog(sms, runtime, fake_twilio) -> None:
    later = runtime.now() + timedelta(minutes=1)
    with runtime.session() as session:
        ensure(session, list(POOL), runtime.now())
        # Both pool numbers are booked for the next minute (another worker's backlog).
        session.execute(sa.update(PhoneNumber).values(next_slot_us=int(later.timestamp() * 1_000_000)))
    [result] = sms.send_batch([outbound(sending_touch(runtime, LEAD))])
    assert not result.accepted and result.defer_until == later and not fake_twilio.requests


def test_prepare_refuses_a_text_over_max_segments(sms) -> None:
    sms.prepare(outbound(1, text="я" * 268))  # 4 UCS-2 segments of 67
    with pytest.raises(ValueError, match=r"takes 5 segments \(269 UTF-16 units, UCS-2\); \[plugins.sms\] max_segments is 4"):
        sms.prepare(outbound(1, text="я" * 269))
    with pytest.raises(ValueError, match="empty"):
        sms.prepare(outbound(1, text="  "))


def test_a_group_spreads_new_leads_over_the_pool_and_waits_for_slots(sms, runtime, fake_twilio, monkeypatch) -> None:
    """Five new leads in one group: the pool's numbers share them, and each number keeps its rate."""
    monkeypatch.setitem(sms.context.settings, "per_number_per_second", 5)
    phones = [f"+1415555267{i}" for i in range(5)]
    touches = [sending_touch(runtime, phone) for phone in phones]
    started = time.monotonic()
    results = sms.send_batch([outbound(t, phone) for t, phone in zip(touches, phones)])
    assert all(r.accepted for r in results)
    senders = {s.form["To"]: s.form["From"] for s in fake_twilio.sent()}
    assert sorted(senders.values()).count(POOL[0]) == 3 and sorted(senders.values()).count(POOL[1]) == 2
    # Five texts a second per number: the third from POOL[0] waited for its slot, 0.4 s after the first.
    assert time.monotonic() - started >= 0.4
    with runtime.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(LeadNumber)) == 5
        next_slots = dict(session.execute(sa.select(PhoneNumber.number, PhoneNumber.next_slot_us)).all())
    now_us = int(runtime.now().timestamp() * 1_000_000)
    assert (next_slots[POOL[0]] - now_us, next_slots[POOL[1]] - now_us) == (600_000, 400_000)
    # The next group: each lead hears from the same number again.
    again = [sending_touch(runtime, phone) for phone in phones]
    sms.send_batch([outbound(t, phone) for t, phone in zip(again, phones)])
    assert {s.form["To"]: s.form["From"] for s in fake_twilio.sent()[5:]} == senders


def test_a_number_another_worker_fixed_meanwhile_is_the_one(runtime) -> None:
    """Between our read and our insert another worker gave the lead a number: theirs stands."""
    touch_id = sending_touch(runtime, LEAD)
    now = runtime.now()
    with runtime.session() as session:
        ensure(session, list(POOL), now)
        lead_id = session.scalar(sa.select(Touch.lead_id).where(Touch.id == touch_id))
        theirs = session.scalar(sa.select(PhoneNumber.id).where(PhoneNumber.number == POOL[1]))
        session.add(LeadNumber(lead_id=lead_id, phone_number_id=theirs, assigned_at=now))
        session.flush()
        # Left to itself, the choice would be POOL[0]: no lead hears from it yet.
        assert senders._assign(session, {lead_id: None}, now) == {lead_id: POOL[1]}


@pytest.mark.parametrize(("key", "value", "words"), [
    ("concurrent_requests", 0, "[plugins.sms] concurrent_requests must be a positive whole number, not 0"),
    ("per_number_daily_cap", 1.5, "[plugins.sms] per_number_daily_cap must be a positive whole number, not 1.5"),
    ("per_number_per_second", "fast", "[plugins.sms] per_number_per_second must be a positive number, not 'fast'"),
    ("numbers", ["4155550100"], "[plugins.sms] numbers: number '4155550100' must be written internationally"),
])
def test_a_wrong_setting_is_named_with_its_fix(sms, monkeypatch, key, value, words) -> None:
    monkeypatch.setitem(sms.context.settings, key, value)
    assert words in sms.unavailable_reason()
    [result] = sms.send_batch([outbound(1)])
    assert result.retryable and not result.accepted and words in result.error


@pytest.mark.parametrize("no_proxy, expected", [("", "http://proxy.example:3128"), ("api.twilio.com", None)])
def test_the_api_proxy_comes_from_the_environment(monkeypatch, no_proxy: str, expected: str | None) -> None:
    """HTTPS_PROXY and NO_PROXY are honoured, as the SDK's own client does (read once per group of texts)."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)

    async def proxy_for(url: str) -> str | None:
        http = _AsyncHttpClient(url)
        await http.close()
        return http.proxy

    assert asyncio.run(proxy_for("https://api.twilio.com")) == expected
