"""`sequencer calls dial TASK_ID`: the rep's phone rings first, then the TwiML bridges to the lead."""
from __future__ import annotations

import pytest

from voice_support import BASE_URL, LEAD, NOTICE, POOL, REP, REP_PHONE, events, lead_with_touch, task_of, touch

OWN_NUMBER = "+14155550199"
# The fixed clock of the runtime fixture: 09:00 in New York, 06:00 in Los Angeles.
NOW = "2026-03-02T14:00:00Z"


@pytest.fixture
def rep(cli) -> str:
    cli("users", "add", REP, "--role", "rep", "--phone", REP_PHONE)
    return REP


def test_click_to_call_rings_the_rep_then_dials_the_lead_from_the_reps_number(runtime, cli, rep, fake_twilio,
                                                                              client) -> None:
    cli("numbers", "assign", OWN_NUMBER, "--owner", rep)
    touch_id = lead_with_touch(runtime, action="manual")
    task_id = task_of(runtime, touch_id)
    out = cli("calls", "dial", str(task_id), now=NOW).output
    [call] = fake_twilio.sent("Calls")
    assert f"calling {REP} at {REP_PHONE}" in out and call.sid in out
    # Twilio rings the rep first, showing the number the lead will see.
    assert (call.form["To"], call.form["From"]) == (REP_PHONE, OWN_NUMBER)
    assert call.form["Url"] == f"{BASE_URL}/hooks/voice/bridge/{task_id}?caller_id=%2B14155550199"
    assert "MachineDetection" not in call.form
    [bridge] = fake_twilio.play(client, call.sid)
    dial = bridge.find("Dial")
    assert dial.get("callerId") == OWN_NUMBER and dial.find("Number").text == LEAD
    assert dial.get("record") is None and bridge.find("Say") is None
    # The rep's call is on the lead's timeline, with its result; the task stays open for the outcome.
    [result] = events(runtime, "call_result")
    assert result.touch_id == touch_id and result.classification["status"] == "completed"
    assert (touch(runtime, touch_id).status, touch(runtime, touch_id).provider_id) == ("pending", call.sid)


def test_without_an_own_number_the_lead_hears_the_pool_number(runtime, cli, rep, fake_twilio, client) -> None:
    task_id = task_of(runtime, lead_with_touch(runtime, action="manual"))
    cli("calls", "dial", str(task_id), now=NOW)
    [call] = fake_twilio.sent("Calls")
    [bridge] = fake_twilio.answer(client, call.sid)
    assert call.form["From"] == POOL[0] and bridge.find("Dial").get("callerId") == POOL[0]


@pytest.mark.parametrize("voice_settings", [{"record": True, "on_human": "hangup", "calls_per_second": 1000}])
def test_a_recorded_call_is_announced_to_both_sides_and_its_recording_kept(runtime, cli, rep, fake_twilio,
                                                                            client) -> None:
    touch_id = lead_with_touch(runtime, action="manual")
    cli("calls", "dial", str(task_of(runtime, touch_id)), now=NOW)
    [call] = fake_twilio.sent("Calls")
    rep_side, lead_side = fake_twilio.answer(client, call.sid)
    assert rep_side.find("Say").text == NOTICE and lead_side.find("Say").text == NOTICE
    dial = rep_side.find("Dial")
    assert dial.get("record") == "record-from-answer-dual"
    assert dial.get("recordingStatusCallback") == f"{BASE_URL}/hooks/voice/recording"
    for _ in range(2):  # replayed
        fake_twilio.recording(client, dial.get("recordingStatusCallback"), call.sid, duration=95,
                              recording_sid="RE" + "1" * 32)
    [recording] = events(runtime, "call_recording")
    assert recording.touch_id == touch_id and recording.classification["duration"] == 95
    assert recording.classification["recording_url"].endswith("/Recordings/RE" + "1" * 32)


def test_dial_is_refused_outside_contact_hours_saying_when_they_open(runtime, cli, rep, fake_twilio) -> None:
    # 14:00 UTC on Monday 2 March 2026 is 06:00 in Los Angeles; [contact_hours] open at 08:00 (16:00 UTC).
    task_id = task_of(runtime, lead_with_touch(runtime, action="manual", zone="America/Los_Angeles"))
    result = cli("calls", "dial", str(task_id), now=NOW, expect=1)
    assert "outside Jane Doe's contact hours (America/Los_Angeles); they open at 2026-03-02T16:00:00Z" in result.output
    assert fake_twilio.requests == []
    cli("calls", "dial", str(task_id), now="2026-03-02T16:00:00Z")
    assert len(fake_twilio.sent("Calls")) == 1


def test_dial_names_what_is_missing(runtime, cli, fake_twilio) -> None:
    cli("users", "add", REP, "--role", "rep")
    task_id = task_of(runtime, lead_with_touch(runtime, action="manual"))
    result = cli("calls", "dial", str(task_id), now=NOW, expect=1)
    assert f"{REP} has no phone to ring; `sequencer users set {REP} --phone +E164`" in result.output
    assert "no task 999" in cli("calls", "dial", "999", now=NOW, expect=1).output
    assert fake_twilio.requests == []


def test_bridge_with_a_bad_signature_says_nothing(runtime, cli, rep, fake_twilio, client) -> None:
    task_id = task_of(runtime, lead_with_touch(runtime, action="manual"))
    url = f"{BASE_URL}/hooks/voice/bridge/{task_id}?caller_id=%2B14155550100"
    response = fake_twilio.post(client, url, {"CallSid": "CA" + "2" * 32}, signature="AAAA")
    assert response.status_code == 403 and LEAD not in response.get_data(as_text=True)
