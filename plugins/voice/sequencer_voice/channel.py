"""The voice channel: voicemail drops as automatic steps, each call placed with answering-machine detection."""
from __future__ import annotations

from sequencer.channels import Channel, Health, OutboundTouch, SendResult
from sequencer_voice import calls, twiml
from sequencer_voice.settings import SCHEMA, VoiceConfigError, VoiceSettings, read_settings

DROP_PATH = "/hooks/voice/drop"
PLAYED_PATH = "/hooks/voice/played"
STATUS_PATH = "/hooks/voice/status"
# Twilio posts these progress events to the status callback (it posts only "completed" unless asked).
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]


class VoiceChannel(Channel):
    """Call leads over Twilio Voice: automatic steps leave a voicemail; manual ones are a rep's calls."""

    name = "voice"
    automatic = True
    config_schema = SCHEMA
    # As the built-in manual-only voice channel declares (sequencer.builtin.ManualVoice), which this replaces.
    address_kind = "phone"
    address_required = "all"
    task_kind = "call"
    task_verb = "Call"
    task_priority = 30
    requires_consent = "automatic"
    contact_hours = True
    sender_kind = "number"

    def unavailable_reason(self) -> str | None:
        """Return the [plugins.voice] setting that is missing or unusable, or None when calls can be placed."""
        context = getattr(self, "context", None)
        if context is None:
            return "the voice channel has not been configured yet"
        try:
            read_settings(context.settings)
        except VoiceConfigError as exc:
            return str(exc)
        return None

    def health(self) -> Health:
        """Fetch our Twilio account with the configured credentials (`plugins list`, `doctor`); nothing is called."""
        reason = self.unavailable_reason()
        if reason is not None:
            return Health(ok=False, detail=reason)
        return calls.account_health(read_settings(self.context.settings))

    def prepare(self, touch: OutboundTouch) -> None:
        """Refuse an empty message (a voicemail drop would say nothing) or a wrong language line."""
        _, text = twiml.message_language(touch.text)
        if not text.strip():
            raise ValueError("the rendered voicemail message is empty; give the step a body or template")

    def send_batch(self, touches: list[OutboundTouch]) -> list[SendResult]:
        """Place one call per touch; each is only placed here, and is sent once its message was played."""
        try:
            settings = read_settings(self.context.settings)
        except VoiceConfigError as exc:
            return [SendResult(t.touch_id, accepted=False, retryable=True, error=str(exc)) for t in touches]
        twilio = calls.client(settings)
        return [self._send(settings, twilio, touch) for touch in touches]

    def _send(self, settings: VoiceSettings, twilio, touch: OutboundTouch) -> SendResult:
        core = self.context.core
        assert core is not None, "a channel that sends is configured with its Core"
        if not touch.to_phone:
            return SendResult(touch.touch_id, accepted=False, error=f"touch {touch.touch_id} has no phone number")
        number = core.sender_number(touch.touch_id, settings.numbers)
        if number is None:
            return SendResult(touch.touch_id, accepted=False, retryable=True,
                              error="no number to call from: set [plugins.voice] numbers")
        base = self.context.base_url.rstrip("/")
        # Synchronous AMD: Twilio fetches the TwiML only once it knows who answered and, for a
        # machine, once its greeting is over, so the message starts on the recording.
        placed = calls.place(core, settings, twilio, to=touch.to_phone, from_=number,
                             url=f"{base}{DROP_PATH}/{touch.touch_id}", machine_detection="DetectMessageEnd",
                             status_callback=f"{base}{STATUS_PATH}/drop?touch={touch.touch_id}",
                             status_callback_event=STATUS_EVENTS)
        if placed.sid is not None:
            # Twilio took the call; whether a machine heard the message is known only when /played is reached.
            return SendResult(touch.touch_id, accepted=True, provider_id=placed.sid, provider_status="queued",
                              sent_when_reported=True)
        if placed.invalid_number:
            return SendResult(touch.touch_id, accepted=False, error=placed.error, recipient_problem="invalid_address")
        if placed.defer_until is not None:
            return SendResult(touch.touch_id, accepted=False, error=placed.error, defer_until=placed.defer_until)
        if placed.unknown:
            return SendResult(touch.touch_id, accepted=False, provider_status="unknown", error=placed.error)
        return SendResult(touch.touch_id, accepted=False, retryable=placed.retryable, error=placed.error,
                          sender_problem=placed.error if placed.our_side else None,
                          provider_status=None if placed.retryable else "refused")
