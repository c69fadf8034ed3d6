"""Voicemail drops through the real twilio SDK and the fake Twilio playing its part: TwiML, AMD, callbacks."""
from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from sequencer.builtin import ManualVoice
from sequencer.channels import Channel
from sequencer.engine import Engine
from sequencer.models import Enrollment
from sequencer.testing.world import ALWAYS_OPEN, apply, enroll_csv, touches
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


def test_health_fetches_the_account_and_names_a_wrong_token(voice, fake_twilio) -> None:
    health = voice.health()
    assert health.ok and health.detail == "ok (Twilio account 'Fake Twilio account')"
    assert fake_twilio.requests == []  # nothing was called
    fake_twilio.auth_token = "not-the-configured-one"
    health = voice.health()
    assert not health.ok and health.detail == ("Twilio refused the account (HTTP 401): check [plugins.voice] "
                                               "account_sid and auth_token")


def _dropped(runtime, voice, fake_twilio, **lead) -> tuple[int, str]:
    touch_id = lead_with_touch(runtime, **lead)
    [result] = voice.send_batch([outbound(touch_id, lead.get("phone", LEAD))])
    assert result.accepted and result.provider_status == "queued", result.error
    assert result.sent_when_reported  # Twilio took the call; nobody heard the message yet
    settle(runtime, touch_id, result)
    return touch_id, result.provider_id


# An automatic drop, then a rep's call a day later.
DROPS = 'name = "drops"\n' + ALWAYS_OPEN + """
[[steps]]
key = "drop"
channel = "voice"
action = "auto"
body = "Hi {{ lead.first_name }}, it is Acme."

[[steps]]
key = "call"
channel = "voice"
action = "manual"
wait = "1d"
body = "Call {{ lead.first_name }}."
"""


def _placed_by_the_engine(cli, runtime, tmp_path, fake_twilio):
    """Enrol a consenting New York lead in DROPS and run the worker; return the drop's touch, call SID, report."""
    apply(cli, tmp_path, DROPS)
    enroll_csv(cli, tmp_path, [f"{LEAD},Jane,Doe,Globex,US,America/New_York,{REP},web form"], "drops", runtime.now(),
               header="phone,first_name,last_name,company,country,timezone,owner,consent_voice")
    report = Engine(runtime).run_until_idle()
    [call] = fake_twilio.sent("Calls")
    [drop] = touches(runtime)
    return drop, call.sid, report


def _reported_before_recorded(voice, monkeypatch, reports) -> None:
    """Let `reports(result)` play each call's reports after Twilio took it, before the worker records that answer."""
    place = voice.send_batch

    def place_then_report(outbound_touches):
        results = place(outbound_touches)
        for result in results:
            reports(result)
        return results

    monkeypatch.setattr(voice, "send_batch", place_then_report)


def _enrollment(runtime) -> Enrollment:
    with runtime.session() as session:
        return session.scalars(sa.select(Enrollment)).one()


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
    assert call.form["StatusCallback"] == f"{BASE_URL}/hooks/voice/status/drop?touch={touch_id}"
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


def test_the_message_is_said_in_the_language_its_template_declares(voice, runtime, fake_twilio, client) -> None:
    """A Russian cadence's drop to a lead in Germany: the template's first line says the language."""
    touch_id, sid = _dropped(runtime, voice, fake_twilio, country="DE",
                             text="language: ru-RU\nЗдравствуйте, Яна! Это Acme.")
    [first, _] = fake_twilio.play(client, sid, "machine_end_beep", duration=12)
    say = first.find("Say")
    assert (say.text, say.get("language")) == ("Здравствуйте, Яна! Это Acme.", "ru-RU")


def test_a_wrong_language_line_is_refused_before_the_call(voice) -> None:
    with pytest.raises(ValueError, match="'language: russian please' is not a language tag; write one"):
        voice.prepare(outbound(1, text="language: russian please\nЗдравствуйте"))
    with pytest.raises(ValueError, match="message is empty"):
        voice.prepare(outbound(1, text="language: ru-RU\n  "))


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


def test_callbacks_out_of_order_and_replayed(sent_touches, voice, runtime, fake_twilio, client, clock) -> None:
    touch_id, sid = _dropped(runtime, voice, fake_twilio)
    # The final status first, then progress that arrived late, then replays of all of it.
    fake_twilio.progress(client, sid, "completed", duration=40, answered_by="machine_end_beep")
    early = touch(runtime, touch_id)
    # Nothing said the message was played, yet: the end of the call does not make the drop sent.
    assert (early.status, early.sent_at, sent_touches) == ("failed", None, [])
    fake_twilio.progress(client, sid, "ringing", "in-progress", "initiated")
    assert touch(runtime, touch_id).status == "failed"
    clock.advance(timedelta(seconds=5))
    fake_twilio.answer(client, sid, "machine_end_beep")  # the played report, late
    played_at = runtime.now()
    for _ in range(2):
        clock.advance(timedelta(seconds=5))
        fake_twilio.progress(client, sid, "initiated", "ringing", "in-progress", "completed", duration=40,
                             answered_by="machine_end_beep")
        fake_twilio.answer(client, sid, "machine_end_beep")
    done = touch(runtime, touch_id)
    # The call is over, so the played drop is completed, as in the usual order (test below).
    assert (done.status, done.outcome, done.provider_status, done.error) == ("completed", "left_voicemail",
                                                                              "completed", None)
    assert done.sent_at == played_at
    assert [(e.touch_id, e.provider_id, e.sent_at) for e in sent_touches] == [(touch_id, sid, played_at)]
    assert len(events(runtime, "call_result")) == 1 and len(events(runtime, "voicemail")) == 1


def test_the_engine_places_a_drop_and_it_is_sent_only_once_played(sent_touches, voice, runtime, fake_twilio, client,
                                                                  clock, cli, tmp_path) -> None:
    placed_at = runtime.now()
    drop, sid, report = _placed_by_the_engine(cli, runtime, tmp_path, fake_twilio)
    assert (report.placed, report.sent) == (1, 0)
    assert (drop.status, drop.sent_at, drop.provider_id, drop.provider_status) == ("placed", None, sid, "queued")
    assert sent_touches == []
    # The cadence moved on when the call was placed: the rep's call is due a day later.
    enrollment = _enrollment(runtime)
    assert (enrollment.state, enrollment.step_position) == ("active", 1)
    assert enrollment.next_due_at == placed_at + timedelta(days=1)
    [row] = [r for r in json.loads(cli("timeline", LEAD, "--format", "json").output) if r["kind"] == "touch"]
    assert row["status"] == "placed"
    assert row["detail"] == "Hi Jane, it is Acme. - placed with the provider; sent once reported done"

    fake_twilio.progress(client, sid, "initiated", "ringing", "in-progress")
    assert (touch(runtime, drop.id).status, touch(runtime, drop.id).provider_status) == ("placed", "in_progress")
    clock.advance(timedelta(seconds=40))
    fake_twilio.answer(client, sid, "machine_end_beep")
    played_at = runtime.now()
    played = touch(runtime, drop.id)
    assert (played.status, played.sent_at, played.outcome) == ("sent", played_at, "left_voicemail")
    assert [(e.touch_id, e.channel, e.step_key, e.provider_id, e.sent_at) for e in sent_touches] == [
        (drop.id, "voice", "drop", sid, played_at)]

    clock.advance(timedelta(seconds=5))
    fake_twilio.progress(client, sid, "completed", duration=48, answered_by="machine_end_beep")
    # Replays of every report change nothing.
    fake_twilio.progress(client, sid, "initiated", "ringing", "in-progress", "completed", duration=48,
                         answered_by="machine_end_beep")
    fake_twilio.answer(client, sid, "machine_end_beep")
    done = touch(runtime, drop.id)
    assert (done.status, done.sent_at, done.outcome, done.error) == ("completed", played_at, "left_voicemail", None)
    assert len(sent_touches) == 1
    assert len(events(runtime, "voicemail")) == 1 and len(events(runtime, "call_result")) == 1


@pytest.mark.parametrize("answered_by, final, why", [("human", "completed", "a person answered"),
                                                     (None, "no-answer", "nobody answered"),
                                                     (None, "busy", "the line was busy")])
def test_a_drop_nobody_heard_is_never_sent(sent_touches, voice, runtime, fake_twilio, client, cli, tmp_path,
                                           answered_by, final, why) -> None:
    drop, sid, _ = _placed_by_the_engine(cli, runtime, tmp_path, fake_twilio)
    for _ in range(2):  # and a replay
        if answered_by:
            fake_twilio.play(client, sid, answered_by, final=final)
        else:
            fake_twilio.progress(client, sid, "initiated", "ringing", final)
    missed = touch(runtime, drop.id)
    assert (missed.status, missed.sent_at, missed.outcome) == ("failed", None, None)
    assert missed.error == f"voicemail not played: {why}"
    assert sent_touches == []
    # The cadence goes on all the same: the rep's call a day later.
    assert (_enrollment(runtime).state, _enrollment(runtime).step_position) == ("active", 1)


def test_a_message_played_before_the_worker_recorded_the_call_is_sent_once(sent_touches, voice, runtime, fake_twilio,
                                                                           client, cli, tmp_path,
                                                                           monkeypatch) -> None:
    def played_at_once(result):
        # A fast machine: the message is over before the worker records Twilio's answer.
        fake_twilio.answer(client, result.provider_id, "machine_end_beep")
        assert touch(runtime, result.touch_id).status == "sent"

    _reported_before_recorded(voice, monkeypatch, played_at_once)
    drop, sid, report = _placed_by_the_engine(cli, runtime, tmp_path, fake_twilio)
    assert (report.sent, report.placed) == (1, 0)
    assert (drop.status, drop.sent_at, drop.provider_id, drop.outcome) == ("sent", runtime.now(), sid,
                                                                           "left_voicemail")
    # Announced once, by the worker, with the call's SID it alone knew when the report came.
    assert [(e.touch_id, e.provider_id) for e in sent_touches] == [(drop.id, sid)]
    fake_twilio.progress(client, sid, "completed", duration=30, answered_by="machine_end_beep")
    assert touch(runtime, drop.id).status == "completed" and len(sent_touches) == 1


def test_a_call_over_before_the_worker_recorded_it_fails_and_stays_failed(sent_touches, voice, runtime, fake_twilio,
                                                                           client, cli, tmp_path, monkeypatch) -> None:
    def busy_at_once(result):
        # Calls go out one a second: this one was busy before its group was recorded. Its
        # progress finds no touch with its CallSid yet; the end finds the drop by its touch id.
        fake_twilio.progress(client, result.provider_id, "initiated", "busy", duration=0)
        assert touch(runtime, result.touch_id).status == "failed"

    _reported_before_recorded(voice, monkeypatch, busy_at_once)
    drop, sid, report = _placed_by_the_engine(cli, runtime, tmp_path, fake_twilio)
    assert (report.sent, report.placed) == (0, 1)
    assert (drop.status, drop.sent_at, drop.provider_id) == ("failed", None, sid)
    assert drop.error == "voicemail not played: the line was busy" and sent_touches == []
    # The cadence goes on all the same.
    assert (_enrollment(runtime).state, _enrollment(runtime).step_position) == ("active", 1)


def test_missed_then_played_before_the_worker_recorded_it_is_sent_once(sent_touches, voice, runtime, fake_twilio,
                                                                         client, cli, tmp_path, monkeypatch) -> None:
    """The busy report wins the race, the played one (out of order) follows: one touch_sent, from the worker."""
    def busy_then_played(result):
        fake_twilio.progress(client, result.provider_id, "busy", duration=0)
        voice.context.core.voicemail_played(result.touch_id)
        assert touch(runtime, result.touch_id).status == "completed" and sent_touches == []

    _reported_before_recorded(voice, monkeypatch, busy_then_played)
    drop, sid, report = _placed_by_the_engine(cli, runtime, tmp_path, fake_twilio)
    assert (report.sent, report.placed) == (1, 0)
    assert (drop.status, drop.outcome, drop.error) == ("completed", "left_voicemail", None)
    assert [(e.touch_id, e.provider_id) for e in sent_touches] == [(drop.id, sid)]


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
    assert (unchanged.status, unchanged.provider_status, unchanged.outcome) == ("placed", "queued", None)
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
