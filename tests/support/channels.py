"""A throwaway SMS channel, declared as a plugin would declare one (plugins never import the built-in)."""
from __future__ import annotations

from sequencer.channels import Channel, OutboundTouch, SendResult


class FakeSms(Channel):
    """Accept every text, as provider message SM<touch id>."""

    name = "sms"
    address_kind = "phone"
    task_kind = "sms"
    task_verb = "Text"
    task_priority = 20
    requires_consent = "all"
    contact_hours = True
    sender_kind = "number"

    def send_batch(self, touches: list[OutboundTouch]) -> list[SendResult]:
        return [SendResult(t.touch_id, accepted=True, provider_id=f"SM{t.touch_id}") for t in touches]
