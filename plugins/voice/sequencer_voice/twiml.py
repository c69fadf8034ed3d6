"""The TwiML Twilio runs on our calls, built with the SDK's VoiceResponse: pure functions of what to say."""
from __future__ import annotations

import re

from twilio.twiml.voice_response import Dial, VoiceResponse

# Twilio's AnsweredBy with MachineDetection=DetectMessageEnd (synchronous AMD): the machine's
# greeting has ended (after its beep, a silence, or otherwise), so a message starts on the recording.
MACHINE_END = ("machine_end_beep", "machine_end_silence", "machine_end_other")


def bridge(lead_phone: str, caller_id: str, *, record_notice: str | None, notice_url: str,
           recording_callback: str) -> str:
    """The rep answered: (announce the recording to them,) then dial the lead from `caller_id`.

    With a notice, the call is recorded from the lead's answer, both sides on their own channel,
    and the lead hears the notice (<Number url>, played to them before they are connected).
    """
    response = VoiceResponse()
    if record_notice:
        response.say(record_notice)
        dial = Dial(caller_id=caller_id, answer_on_bridge=True, record="record-from-answer-dual",
                    recording_status_callback=recording_callback, recording_status_callback_event="completed")
        dial.number(lead_phone, url=notice_url)
    else:
        dial = Dial(caller_id=caller_id, answer_on_bridge=True)
        dial.number(lead_phone)
    response.append(dial)
    return str(response)


def say(text: str, language: str | None = None) -> str:
    """Say `text` (the record notice, played to the lead before the rep is connected)."""
    response = VoiceResponse()
    response.say(text, language=language)
    return str(response)


# A drop's message may start with the language it is written in, as a call script's header does:
# "language: ru-RU" on its first line (a BCP 47 tag as Twilio's <Say> takes it), then the text.
_LANGUAGE_LINE = re.compile(r"\A[ \t]*language:[ \t]*(?P<tag>[^\r\n]*?)[ \t]*(?:\r?\n|\Z)", re.IGNORECASE)
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*\Z")


def message_language(message: str) -> tuple[str | None, str]:
    """Split a drop's message into the language its first line declares (None: none) and the text to play.

    Raises ValueError naming the line when the declared language is not a language tag.
    """
    found = _LANGUAGE_LINE.match(message)
    if found is None:
        return None, message
    tag = found.group("tag")
    if not _LANGUAGE_TAG.match(tag):
        raise ValueError(f"the message's first line 'language: {tag}' is not a language tag; write one "
                         "Twilio's <Say> knows, like 'language: ru-RU' or 'language: en-US'")
    return tag, message[found.end():]


def voicemail(message: str, language: str, played_url: str) -> str:
    """Leave the message after the beep, then tell us it was played to the end.

    A message that is one http(s) URL is a recorded audio file (<Play>); anything else is read
    out (<Say>) in the lead's language. Twilio only reaches <Redirect> once the message is over,
    so the request to `played_url` is the proof that it was played.
    """
    response = VoiceResponse()
    text = message.strip()
    if text.startswith(("https://", "http://")) and not any(c.isspace() for c in text):
        response.play(text)
    else:
        response.say(text, language=language)
    response.redirect(played_url)
    return str(response)


def greeting(text: str, language: str) -> str:
    """A person answered a voicemail drop: greet them politely, then hang up."""
    response = VoiceResponse()
    response.say(text, language=language)
    response.hangup()
    return str(response)


def hangup() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)
