"""Twilio's requests on our calls: the TwiML of each call and its status and recording callbacks.

Every one is checked against X-Twilio-Signature on [web] base_url + path (COMPLIANCE.md rule 14):
a request that fails gets 403 and nothing is recorded or said.
"""
from __future__ import annotations

import logging

import flask
from twilio.request_validator import RequestValidator

from sequencer.channels import Core, DialError, core_for, public_url
from sequencer_voice import twiml
from sequencer_voice.calls import FINAL, STATUS
from sequencer_voice.channel import DROP_PATH, PLAYED_PATH, STATUS_PATH
from sequencer_voice.settings import VoiceConfigError, VoiceSettings, read_settings

log = logging.getLogger(__name__)
bp = flask.Blueprint("voice_hooks", __name__)

BRIDGE_PATH = "/hooks/voice/bridge"
NOTICE_PATH = "/hooks/voice/notice"
RECORDING_PATH = "/hooks/voice/recording"
# Why a drop's call ended without its message, by Twilio's AnsweredBy, then by the final status.
MISSED = {"human": "a person answered", "unknown": "a person answered", "fax": "a fax machine answered",
          "busy": "the line was busy", "no_answer": "nobody answered", "failed": "the call failed",
          "canceled": "the call was canceled"}


@bp.post(f"{BRIDGE_PATH}/<int:task_id>")
def bridge(task_id: int) -> flask.Response:
    """The rep answered their phone: connect them to the task's lead from the caller id chosen at dialing."""
    core, settings = _authenticated()
    try:
        task = core.call_task(task_id)
    except DialError as exc:
        # Something changed since the rep dialled (an opt-out...): tell the rep and connect nobody.
        return _xml(twiml.greeting(f"This call cannot be placed: {exc}", settings.say_language))
    base = core.base_url.rstrip("/")
    return _xml(twiml.bridge(task.lead_phone, flask.request.args.get("caller_id") or settings.numbers[0],
                             record_notice=settings.record_notice if settings.record else None,
                             notice_url=base + NOTICE_PATH, recording_callback=base + RECORDING_PATH))


@bp.post(NOTICE_PATH)
def notice() -> flask.Response:
    """The lead answered a recorded call: tell them, before the rep is connected."""
    _, settings = _authenticated()
    return _xml(twiml.say(settings.record_notice or ""))


@bp.post(f"{DROP_PATH}/<int:touch_id>")
def drop(touch_id: int) -> flask.Response:
    """A voicemail drop was answered: the message after a machine's beep; a greeting for a person."""
    core, settings = _authenticated()
    found = core.drop(touch_id)
    if found is None:
        return _xml(twiml.hangup())
    answered_by = flask.request.form.get("AnsweredBy", "unknown")
    try:
        declared, message = twiml.message_language(found.text)
    except ValueError:
        declared, message = None, found.text  # refused at send (prepare): a drop recorded before that check
    language = settings.language(found.lead_country)
    if answered_by in twiml.MACHINE_END:
        played = core.base_url.rstrip("/") + f"{PLAYED_PATH}/{touch_id}"
        # The message in the language its template declares, else the one [plugins.voice] gives the lead's country.
        return _xml(twiml.voicemail(message, declared or language, played))
    if answered_by in ("human", "unknown"):
        # "unknown": AMD could not tell, which mostly means a person who said little; never leave them a recording.
        if settings.on_human == "callback_task":
            core.call_back_task(touch_id, f"They answered the voicemail drop (call "
                                                   f"{flask.request.form.get('CallSid', '')}); the greeting "
                                                   "was played and they are waiting for your call.")
        return _xml(twiml.greeting(settings.human_greeting, language))
    return _xml(twiml.hangup())  # a fax, or a machine whose greeting never ended


@bp.post(f"{PLAYED_PATH}/<int:touch_id>")
def played(touch_id: int) -> flask.Response:
    """Twilio finished the voicemail message: the drop counts."""
    core, _ = _authenticated()
    core.voicemail_played(touch_id)
    return _xml(twiml.hangup())


@bp.post(f"{STATUS_PATH}/<any(drop, dial):kind>")
def status(kind: str) -> flask.Response:
    """Move the call's touch forward; a drop that ended without its message played fails."""
    core, _ = _authenticated()
    form = flask.request.form
    sid, word = form.get("CallSid", ""), STATUS.get(form.get("CallStatus", ""))
    if not sid or word is None:
        return _text("", 200)
    duration = form.get("CallDuration") or form.get("Duration")
    answered_by = form.get("AnsweredBy") or None
    core.call_result(provider_id=sid, status=word, duration=int(duration) if duration and duration.isdigit() else None,
                     answered_by=answered_by, at=core.now())
    if kind == "drop" and word in FINAL:
        why = MISSED.get(answered_by or "") or MISSED.get(word) or "the call ended before the message was over"
        touch = flask.request.args.get("touch", "")
        # The drop's touch id (in the URL Twilio signed): its call may end before the worker recorded its CallSid.
        core.voicemail_missed(sid, why, int(touch) if touch.isdigit() else None)
    # Unknown ids and replays get 200 too: Twilio retrying them would not help.
    return _text("", 200)


@bp.post(RECORDING_PATH)
def recording() -> flask.Response:
    """Put a finished recording of a rep's call on the lead's timeline."""
    core, _ = _authenticated()
    form = flask.request.form
    if form.get("RecordingStatus") == "completed" and form.get("RecordingSid") and form.get("RecordingUrl"):
        duration = form.get("RecordingDuration", "")
        core.call_recording(form.get("CallSid", ""), form["RecordingSid"], form["RecordingUrl"],
                               int(duration) if duration.isdigit() else None)
    return _text("", 200)


def _authenticated() -> tuple[Core, VoiceSettings]:
    """Return the core and settings; answer 403 unless X-Twilio-Signature matches [web] base_url + path."""
    core = core_for("voice")
    try:
        settings = read_settings(core.settings)
    except VoiceConfigError as exc:
        # Without the auth token no signature can be checked, so nothing may be said or recorded.
        flask.abort(_text(f"the voice plugin is not configured: {exc}", 503))
    request = flask.request
    url = public_url(core.base_url, request.path, request.query_string)
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not RequestValidator(settings.auth_token).validate(url, request.form, signature):
        log.warning("voice: %s with a missing or wrong X-Twilio-Signature (checked against %s); nothing recorded",
                    request.path, url)
        flask.abort(_text("invalid X-Twilio-Signature", 403))
    return core, settings


def _xml(body: str) -> flask.Response:
    return flask.Response(body, status=200, mimetype="application/xml")


def _text(body: str, status: int) -> flask.Response:
    return flask.Response(body, status=status, mimetype="text/plain")
