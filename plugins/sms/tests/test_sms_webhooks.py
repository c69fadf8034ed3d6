"""/hooks/sms/inbound and /hooks/sms/status with real signatures: keywords, TwiML, replays, refusals."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from sequencer.models import Enrollment, InboundEvent, Lead, Suppression, Touch
from sequencer.web import create_app
from sequencer_sms.webhooks import OPT_OUT_CONFIRMATION
from sms_support import BASE_URL, HELP_TEXT, LEAD, POOL, outbound, sending_touch
EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response />'


@pytest.fixture
def client(runtime):
    return create_app(runtime, test_config={"TESTING": True}).test_client(use_cookies=False)


def events(runtime) -> list[InboundEvent]:
    with runtime.session() as session:
        return list(session.scalars(sa.select(InboundEvent).order_by(InboundEvent.id)))


def lead(runtime) -> Lead:
    with runtime.session() as session:
        return session.scalar(sa.select(Lead).where(Lead.phone == LEAD))


@pytest.mark.parametrize("signed_for", ["bad", "missing", "http://localhost/hooks/sms/inbound"])
def test_unsigned_inbound_is_refused_and_nothing_recorded(runtime, client, fake_twilio, signed_for) -> None:
    sending_touch(runtime, LEAD)
    params = {"From": LEAD, "To": POOL[0], "Body": "STOP", "MessageSid": "SM" + "1" * 32}
    url = f"{BASE_URL}/hooks/sms/inbound"
    if signed_for == "bad":
        response = fake_twilio.post(client, url, params, signature="c2lnbmF0dXJl")
    elif signed_for == "missing":
        response = client.post("/hooks/sms/inbound", data=params)
    else:
        # Signed for the URL the app sees (request.url), not [web] base_url: behind a proxy they differ.
        response = fake_twilio.post(client, url, params, signature=fake_twilio.signature(signed_for, params))
    assert response.status_code == 403
    assert events(runtime) == [] and lead(runtime).opted_out_at is None


@pytest.mark.parametrize("body", ["STOP", "СТОП", " stop ", "please stop texting me"])
def test_opt_out_to_another_of_our_numbers(runtime, client, fake_twilio, body) -> None:
    sending_touch(runtime, LEAD)
    response = fake_twilio.inbound(client, BASE_URL, from_=LEAD, to=POOL[1], body=body)
    assert response.status_code == 200 and response.mimetype == "application/xml"
    assert OPT_OUT_CONFIRMATION in response.get_data(as_text=True)
    assert lead(runtime).opted_out_at is not None
    with runtime.session() as session:
        assert session.scalar(sa.select(Enrollment.state)) == "opted_out"
        assert session.scalar(sa.select(Suppression.channel).where(Suppression.kind == "phone")) == "all"


def test_twilio_advanced_opt_out_answers_itself(runtime, client, fake_twilio) -> None:
    sending_touch(runtime, LEAD)
    response = fake_twilio.inbound(client, BASE_URL, from_=LEAD, to=POOL[0], body="STOP",
                                   extra={"OptOutType": "STOP"})
    assert response.get_data(as_text=True) == EMPTY and lead(runtime).opted_out_at is not None


def test_help_answers_help_text_and_a_reply_answers_nothing(runtime, client, fake_twilio) -> None:
    sending_touch(runtime, LEAD)
    help_answer = fake_twilio.inbound(client, BASE_URL, from_=LEAD, to=POOL[0], body=" Help ")
    assert f"<Message>{HELP_TEXT}</Message>" in help_answer.get_data(as_text=True)
    reply = fake_twilio.inbound(client, BASE_URL, from_=LEAD, to=POOL[0], body="Sounds good, call me Tuesday")
    assert reply.get_data(as_text=True) == EMPTY
    assert [e.kind for e in events(runtime)] == ["help", "reply"]
    assert lead(runtime).opted_out_at is None


def test_inbound_to_a_number_not_ours_is_refused(runtime, client, fake_twilio) -> None:
    sending_touch(runtime, LEAD)
    response = fake_twilio.inbound(client, BASE_URL, from_=LEAD, to="+14155550177", body="STOP")
    assert response.status_code == 403 and "+14155550177 is not one of our numbers" in response.get_data(as_text=True)
    assert events(runtime) == []


def test_inbound_to_an_assigned_number_counts(runtime, client, fake_twilio, cli) -> None:
    cli("users", "add", "rep@acme.example", "--role", "rep")
    cli("numbers", "assign", "+14155550177", "--owner", "rep@acme.example")
    sending_touch(runtime, LEAD)
    assert fake_twilio.inbound(client, BASE_URL, from_=LEAD, to="+14155550177", body="STOP").status_code == 200
    assert lead(runtime).opted_out_at is not None


def _sent(runtime, sms, fake_twilio) -> tuple[int, str]:
    """Send a text through the channel and record it as the engine does; return the touch id and SID."""
    touch_id = sending_touch(runtime, LEAD)
    [result] = sms.send_batch([outbound(touch_id)])
    with runtime.session() as session:
        session.execute(sa.update(Touch).where(Touch.id == touch_id).values(
            status="sent", provider_id=result.provider_id, provider_status=result.provider_status))
    return touch_id, result.provider_id


def test_status_callbacks_replayed_and_out_of_order(runtime, client, fake_twilio) -> None:
    touch_id, sid = _sent(runtime, runtime.plugins.channel("sms"), fake_twilio)
    for status in ("sent", "delivered", "sent", "delivered", "queued"):
        assert fake_twilio.status_callback(client, sid, status).status_code == 200
    with runtime.session() as session:
        touch = session.get(Touch, touch_id)
        assert (touch.status, touch.provider_status) == ("delivered", "delivered")
    assert [e.kind for e in events(runtime)] == ["status"]
    unknown = fake_twilio.post(client, f"{BASE_URL}/hooks/sms/status", {"MessageSid": "SM" + "0" * 32,
                                                                          "MessageStatus": "delivered"})
    assert unknown.status_code == 200


def test_status_callback_21610_fails_the_touch_and_suppresses(runtime, client, fake_twilio) -> None:
    touch_id, sid = _sent(runtime, runtime.plugins.channel("sms"), fake_twilio)
    fake_twilio.status_callback(client, sid, "undelivered", error_code=21610)
    with runtime.session() as session:
        touch = session.get(Touch, touch_id)
        assert touch.status == "failed" and "21610" in touch.error
        assert session.scalar(sa.select(Suppression.source).where(Suppression.kind == "phone")) == "twilio_21610"
    assert lead(runtime).opted_out_at is not None


def test_status_callback_with_a_bad_signature_changes_nothing(runtime, client, fake_twilio) -> None:
    touch_id, sid = _sent(runtime, runtime.plugins.channel("sms"), fake_twilio)
    params = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "21610", "To": LEAD}
    response = fake_twilio.post(client, f"{BASE_URL}/hooks/sms/status", params, signature="AAAA")
    assert response.status_code == 403
    with runtime.session() as session:
        assert session.get(Touch, touch_id).status == "sent"
    assert lead(runtime).opted_out_at is None
