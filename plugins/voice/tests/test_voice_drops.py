"""Voicemail drops through the real twilio SDK and the fake Twilio playing its part: TwiML, AMD, callbacks."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from sequencer.builtin import ManualVoice
from sequencer.channels import Channel
from sequencer_voice.channel import VoiceChannel
from voice_support import BASE_URL, GREETING, LEAD, POOL, REP, events, lead_with_touch, outbound, settle, tasks, touch

ATTRIBUTES = ("automatic", "address_kind", "address_required", "task_kind", "task_verb", "task_priority",
              "requires_consent", "contact_hours", "sender_kind")


@pytest.fixture
def voice(runtime, cli) -> VoiceChannel:
    cli("users", "add", REP, "--role", "rep")
    channel = runtime.plugins.channel("voice")
    assert isinstance(channel, VoiceChannel), "the voice plugin is installed (make install) and replaces the built-in"
    return channel


def _dropped(runtime, voice, fake_twilio, **lead) -> tuple[int, str]:
    touch_id = lead_with_touch(runtime, **lead)
    [result] = voice.send_batch([outbound(touch_id, lead.get("phone", LEAD))])
    assert result.accepted and result.provider_status == "queued", result.error
    settle(runtime, touch_id, result)
    return touch_id, result.provider_id


def test_declarations_match_the_built_in_voice_channel(voice, runtime) -> None:
    assert {a: getattr(voice, a) for a in ATTRIBUTES} == {
        a: getattr(ManualVoice, a) if a != "automatic" else True for a in ATTRIBUTES}
    assert voice.unavailable_reason() is None
    voice.configure(voice.context.__class__(settings={**voice.context.settings, "human_greeting": ""},
                                            postal_address=None, base_url=BASE_URL))
    assert voice.unavailable_reason().startswith("[plugins.voice] human_greeting is not set")
    assert issubclass(VoiceChannel, Channel)


def test_the_call_asks_for_synchronous_machine_detection(voice, runtime, fake_twilio) -> None:
    touch_id, sid = _dropped(runtime, voice, fake_twilio)
    [call] = fake_twilio.sent("Calls")
    assert call.sid == sid and sid.startswith("CA")
    assert call.form["To"] == LEAD and call.form["From"] == POOL[0]
    assert call.form["Url"] == f"{BASE_URL}/hooks/voice/drop/{touch_id}"
    assert call.form["MachineDetection"] == "DetectMessageEnd" and "AsyncAmd" not in call.form
    assert call.form["StatusCallback"] == f"{BASE_URL}/hooks/voice/status/drop"
    assert call.values["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]


@pytest.mark.parametrize("country, language", [("US", "en-US"), ("RU", "ru-RU")])
def test_machine_gets_the_message_after_the_beep_and_the_touch_counts(voice, runtime, fake_twilio, client,
                                                                       country, language) -> None:
    touch_id, sid = _dropped(runtime, voice, fake_twilio, country=country)
    first, played = fake_twilio.play(client, sid, "machine_end_beep", duration=31)
    say = first.find("Say")
    assert (say.text, say.get("language")) == ("Hi Jane, it is Acme.", language)
    assert first.find("Redirect").text == f"{BASE_URL}/hooks/voice/played/{touch_id}"
    assert played.find("Hangup") is not None
    done = touch(runtime, touch_id)
    assert (done.status, done.outcome, done.provider_status, done.error) == ("completed", "left_voicemail",
                                                                              "completed", None)
    [result] = events(runtime, "call_result")
    assert result.classification["duration"] == 31 and result.classification["answered_by"] == "machine_end_beep"
    assert [e.kind for e in events(runtime, "voicemail")] == ["voicemail"] and tasks(runtime) == []


def test_an_audio_url_is_played(voice, runtime, fake_twilio, client) -> None:
    touch_id, sid = _dropped(runtime, voice, fake_twilio, text="https://cdn.acme.example/vm/jane.mp3")
    [first, _] = fake_twilio.answer(client, sid, "machine_end_silence")
    assert first.find("Play").text == "https://cdn.acme.example/vm/jane.mp3" and first.find("Say") is None


def test_a_person_hears_the_greeting_and_the_owner_gets_a_call_back_task(voice, runtime, fake_twilio,
                                                                          client) -> None:
    touch_id, sid = _dropped(runtime, voice, fake_twilio)
    [greeting] = fake_twilio.play(client, sid, "human", duration=12)
    assert greeting.find("Say").text == GREETING and greeting.find("Hangup") is not None
    assert greeting.find("Redirect") is None
    missed = touch(runtime, touch_id)
    assert missed.status == "failed" and missed.error == "voicemail not played: a person answered"
    [task] = tasks(runtime)
    assert task.kind == "call" and task.title == f"Call back (voicemail drop {touch_id}): Jane Doe (Globex)"
    assert task.state == "open" and task.owner_id is not None and sid in task.instructions
    # Twilio asking again for the same call's TwiML opens no second task.
    fake_twilio.answer(client, sid, "human")
    assert len(tasks(runtime)) == 1


@pytest.mark.parametrize("voice_settings", [{"record": False, "on_human": "hangup", "calls_per_second": 1000}])
def test_a_person_hears_the_greeting_and_nothing_more_with_on_human_hangup(voice, runtime, fake_twilio,
                                                                            client) -> None:
    touch_id, sid = _dropped(runtime, voice, fake_twilio)
    [greeting] = fake_twilio.play(client, sid, "human")
    assert greeting.find("Say").text == GREETING and tasks(runtime) == []
    assert touch(runtime, touch_id).status == "failed"


@pytest.mark.parametrize("final, why", [("no-answer", "nobody answered"), ("busy", "the line was busy")])
def test_unanswered_drop_is_not_sent(voice, runtime, fake_twilio, client, final, why) -> None:
    touch_id, sid = _dropped(runtime, voice, fake_twilio)
    fake_twilio.progress(client, sid, "initiated", "ringing", final)
    missed = touch(runtime, touch_id)
    assert (missed.status, missed.error) == ("failed", f"voicemail not played: {why}")
    assert missed.provider_status == final.replace("-", "_")


def test_callbacks_out_of_order_and_replayed(voice, runtime, fake_twilio, client) -> None:
    touch_id, sid = _dropped(runtime, voice, fake_twilio)
    # The final status first, then progress that arrived late, then replays of all of it.
    fake_twilio.progress(client, sid, "completed", duration=40, answered_by="machine_end_beep")
    assert touch(runtime, touch_id).status == "failed"  # nothing said the message was played, yet
    fake_twilio.progress(client, sid, "ringing", "in-progress", "initiated")
    fake_twilio.answer(client, sid, "machine_end_beep")  # the played report, late
    for _ in range(2):
        fake_twilio.progress(client, sid, "initiated", "ringing", "in-progress", "completed", duration=40,
                             answered_by="machine_end_beep")
        fake_twilio.answer(client, sid, "machine_end_beep")
    done = touch(runtime, touch_id)
    assert (done.status, done.outcome, done.provider_status, done.error) == ("completed", "left_voicemail",
                                                                              "completed", None)
    assert len(events(runtime, "call_result")) == 1 and len(events(runtime, "voicemail")) == 1


@pytest.mark.parametrize("path", ["/hooks/voice/status/drop", "/hooks/voice/played/{touch}",
                                  "/hooks/voice/drop/{touch}"])
def test_bad_signature_is_refused_and_nothing_recorded(voice, runtime, fake_twilio, client, path) -> None:
    touch_id, sid = _dropped(runtime, voice, fake_twilio)
    url = BASE_URL + path.format(touch=touch_id)
    params = {"CallSid": sid, "CallStatus": "completed", "AnsweredBy": "human", "CallDuration": "3"}
    assert fake_twilio.post(client, url, params, signature="AAAA").status_code == 403
    assert client.post(url, data=params).status_code == 403
    # Signed for another URL than [web] base_url + path.
    forged = fake_twilio.signature("http://localhost" + path.format(touch=touch_id), params)
    assert fake_twilio.post(client, url, params, signature=forged).status_code == 403
    unchanged = touch(runtime, touch_id)
    assert (unchanged.status, unchanged.provider_status, unchanged.outcome) == ("sent", "queued", None)
    assert events(runtime) == [] and tasks(runtime) == []


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("voice_settings", [{"record": False, "on_human": "hangup", "calls_per_second": 4}])
def test_calls_per_second_hold_across_two_workers(voice, runtime, fake_twilio) -> None:
    phones = [f"+1212555{n:04d}" for n in range(10)]
    touches = [lead_with_touch(runtime, phone=phone) for phone in phones]
    halves = [list(zip(touches[:5], phones[:5])), list(zip(touches[5:], phones[5:]))]
    results = []

    def worker(part) -> None:
        results.extend(voice.send_batch([outbound(t, phone) for t, phone in part]))

    threads = [threading.Thread(target=worker, args=(part,)) for part in halves]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # At 4 a second the account has a slot every 0.25 s; waiting at most 2 s, the two workers share
    # 9 slots (0 to 2 s after now) and the tenth call waits for the one after, without an attempt.
    accepted = [r for r in results if r.accepted]
    [deferred] = [r for r in results if not r.accepted]
    assert len(accepted) == 9 and len(fake_twilio.sent("Calls")) == 9
    assert deferred.defer_until == runtime.now() + timedelta(seconds=2.25) and not deferred.retryable
