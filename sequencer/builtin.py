"""Sequencer's own default hook implementations, registered trylast so any plugin can override them."""
from __future__ import annotations

from typing import Callable

from sequencer import hookimpl
from sequencer.channels import Channel
from sequencer.sentiment import read_reply_sentiment


class ManualChannel(Channel):
    """A channel people work by hand: manual steps open tasks; automatic ones wait for a plugin that sends."""

    automatic = False

    def unavailable_reason(self) -> str | None:
        return (f"no installed plugin sends {self.name} by itself; install one, or make the step manual "
                f'(action = "manual")')


class ManualSms(ManualChannel):
    name = "sms"
    address_kind = "phone"
    task_kind = "sms"
    task_verb = "Text"
    task_priority = 20
    requires_consent = "all"
    contact_hours = True
    sender_kind = "number"


class ManualVoice(ManualChannel):
    name = "voice"
    address_kind = "phone"
    task_kind = "call"
    task_verb = "Call"
    task_priority = 30
    requires_consent = "automatic"
    contact_hours = True
    sender_kind = "number"


class ManualTask(ManualChannel):
    name = "task"


@hookimpl(trylast=True)
def register_channels(register: Callable[[Channel], None]) -> None:
    """Declare manual-only sms, voice and task channels, so call and text steps work with no plugin installed."""
    for channel in (ManualSms(), ManualVoice(), ManualTask()):
        register(channel)


@hookimpl(trylast=True)
def classify_reply(text: str) -> str | None:
    """Label a reply positive, negative or neutral with the built-in keyword rules."""
    return read_reply_sentiment(text)
